"""Built disks as an OCI image layout that ``podman machine init --image docker://…`` understands.

One image index lists an entry per (provider disk type × arch): qcow2 for podman's qemu provider,
raw for applehv/libkrun-style users (and fpvm's own launcher), vhdx for hyperv. Each entry is an OCI 1.1
artifact manifest with an empty config and exactly one layer, the compressed disk, whose title is its
file name; podman reads format and compression from that name. The rules podman applies are in
fpvm.machine.registry (which ``fpvm machine init`` uses as well).

The layout is reproducible: no time stamps, entries in a fixed order, JSON with sorted keys, so the
same disks always give the same digests (and a re-push uploads nothing new).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpvm import arch as archmod
from fpvm.fsutil import sha256_file
from fpvm.machine import registry as reg

LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
REF_NAME = "org.opencontainers.image.ref.name"
EMPTY = b"{}"
COMPRESSION_MEDIA_TYPES = {"zst": "application/zstd", "xz": "application/x-xz", "gz": "application/gzip"}
FORMAT_DISKTYPES = {fmt: disktype for disktype, fmt in reg.DISK_FORMATS.items()}
_NAME = re.compile(
    r"^fpvm-(?P<release>[0-9]+\.[0-9]+-[A-Z0-9-]+?)-(?P<arch>amd64|aarch64)"
    r"\.(?P<fmt>qcow2|raw|vhdx)\.(?P<comp>zst|xz|gz)$"
)


class OciError(Exception):
    """A disk that cannot be packaged, or a layout that cannot be written or pushed."""


@dataclass(frozen=True)
class Disk:
    path: Path
    arch: str  # FreeBSD's name
    fmt: str  # qcow2 | raw | vhdx
    compression: str  # zst | xz | gz
    release: str

    @property
    def disktype(self) -> str:
        return FORMAT_DISKTYPES[self.fmt]

    @property
    def title(self) -> str:
        """podman's naming: ``<name>-<disktype>.<arch>.<format>.<compression>``."""
        arch = reg.podman_arch(self.arch)
        return f"fpvm-{self.release}-{self.disktype}.{arch}.{self.fmt}.{self.compression}"


def disk_of(path: Path) -> Disk:
    """A built disk from its file name as ``fpvm build`` writes it (fpvm-15.1-RELEASE-amd64.qcow2.zst)."""
    m = _NAME.match(path.name)
    if not m:
        raise OciError(
            f"{path}: not an fpvm build output (expected fpvm-RELEASE-ARCH.FORMAT.COMPRESSION, e.g. "
            "fpvm-15.1-RELEASE-amd64.qcow2.zst, from `fpvm build --format qcow2`)"
        )
    if not path.is_file():
        raise OciError(f"{path} does not exist")
    return Disk(path, archmod.normalize(m["arch"]), m["fmt"], m["comp"], m["release"])


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


class _Blobs:
    def __init__(self, layout: Path) -> None:
        self.dir = layout / "blobs" / "sha256"
        self.dir.mkdir(parents=True, exist_ok=True)

    def put_bytes(self, data: bytes) -> None:
        path = self.dir / hashlib.sha256(data).hexdigest()
        if not path.exists():
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)

    def put_file(self, source: Path) -> tuple[str, int]:
        """Hash ``source`` and place it as a blob (a hard link when possible: disks are large)."""
        digest = sha256_file(source)
        path = self.dir / digest
        if not path.exists():
            tmp = path.with_name(digest + ".tmp")
            tmp.unlink(missing_ok=True)
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            os.replace(tmp, path)
        return "sha256:" + digest, source.stat().st_size


def package(disks: Iterable[Disk], layout: Path, tag: str) -> dict[str, Any]:
    """Write (or update) the OCI image layout ``layout`` with one index tagged ``tag``; return the index's
    descriptor. Two disks for the same (disk type, arch) are refused: podman would only see the first."""
    chosen = sorted(disks, key=lambda d: (d.disktype, d.arch))
    if not chosen:
        raise OciError("no disks to package")
    seen: set[tuple[str, str]] = set()
    for d in chosen:
        if (d.disktype, d.arch) in seen:
            raise OciError(f"two {d.fmt} disks for {d.arch}: keep one ({d.path})")
        seen.add((d.disktype, d.arch))
    layout.mkdir(parents=True, exist_ok=True)
    blobs = _Blobs(layout)
    blobs.put_bytes(EMPTY)
    entries = []
    for d in chosen:
        digest, size = blobs.put_file(d.path)
        manifest = {
            "schemaVersion": 2,
            "mediaType": reg.MANIFEST_MEDIA_TYPE,
            "artifactType": reg.ARTIFACT_TYPE,
            "config": _descriptor(reg.EMPTY_MEDIA_TYPE, EMPTY),
            "layers": [
                {
                    "mediaType": COMPRESSION_MEDIA_TYPES[d.compression],
                    "digest": digest,
                    "size": size,
                    "annotations": {reg.TITLE: d.title},
                }
            ],
            "annotations": {"org.freebsd.release": d.release, "org.freebsd.os": "freebsd"},
        }
        raw = _dumps(manifest)
        blobs.put_bytes(raw)
        entry = _descriptor(reg.MANIFEST_MEDIA_TYPE, raw)
        entry["artifactType"] = reg.ARTIFACT_TYPE
        entry["platform"] = {"architecture": reg.podman_arch(d.arch), "os": reg.PODMAN_OS}
        entry["annotations"] = {reg.DISKTYPE: d.disktype, "org.freebsd.os": "freebsd"}
        entries.append(entry)
    index = {"schemaVersion": 2, "mediaType": reg.INDEX_MEDIA_TYPE, "manifests": entries}
    raw_index = _dumps(index)
    blobs.put_bytes(raw_index)
    top = _descriptor(reg.INDEX_MEDIA_TYPE, raw_index)
    top["annotations"] = {REF_NAME: tag}
    (layout / "oci-layout").write_bytes(_dumps(LAYOUT_VERSION))
    existing: list[dict[str, Any]] = []
    index_json = layout / "index.json"
    if index_json.exists():
        old = json.loads(index_json.read_text())
        existing = [m for m in old.get("manifests", []) if (m.get("annotations") or {}).get(REF_NAME) != tag]
    outer = {"schemaVersion": 2, "mediaType": reg.INDEX_MEDIA_TYPE, "manifests": [*existing, top]}
    tmp = index_json.with_name("index.json.tmp")
    tmp.write_bytes(_dumps(outer))
    os.replace(tmp, index_json)
    return top


def archive(layout: Path, dest: Path) -> None:
    """An oci-archive (a tar of the layout) with fixed owners and times: same layout, same bytes."""
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in layout.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(layout)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    os.replace(tmp, dest)


def tags_of(layout: Path) -> list[str]:
    try:
        data = json.loads((layout / "index.json").read_text())
    except (OSError, ValueError) as exc:
        raise OciError(f"{layout} is not an OCI image layout: {exc}") from None
    entries = data.get("manifests", [])
    return [str(m["annotations"][REF_NAME]) for m in entries if REF_NAME in (m.get("annotations") or {})]


def push(
    layout: Path, refs: list[str], *, source_tag: str | None = None, tls_verify: bool = True
) -> list[str]:
    """Push the index tagged ``source_tag`` (the layout's only tag by default) to every reference."""
    tags = tags_of(layout)
    if source_tag is None:
        if len(tags) != 1:
            raise OciError(f"{layout} holds tags {tags}: name the one to push with --tag")
        source_tag = tags[0]
    elif source_tag not in tags:
        raise OciError(f"{layout} has no tag {source_tag} (it has {', '.join(tags) or 'none'})")
    import requests
    from oras.layout.layout import Layout

    from fpvm.machine.errors import MachineError

    pushed = []
    try:
        oci_layout = Layout(str(layout), validate=True)
        for ref in refs:
            parsed = reg.parse_reference(ref)
            provider = reg.client(parsed.registry, tls_verify)
            oci_layout.push_to_registry(provider, parsed.name, tag=source_tag, do_chunked=True)
            pushed.append(parsed.name)
    except MachineError as exc:
        raise OciError(str(exc)) from None
    except (requests.exceptions.RequestException, ValueError, OSError) as exc:
        raise OciError(f"push failed: {exc}") from None
    return pushed
