"""FreeBSD disks from an OCI registry, in the shape podman's own machine images have.

podman 5 pulls machine disks as OCI artifacts: ``docker://REGISTRY/NAME:TAG`` names an image index
whose entries each carry one disk. It picks the first entry whose ``annotations["disktype"]`` is its
provider's disk type (``qemu``, ``applehv``, ``hyperv``, ``wsl``), whose ``platform.architecture`` is
``x86_64`` or ``aarch64`` and whose ``platform.os`` is ``linux`` (a constant in podman: a FreeBSD disk is
listed as ``linux`` for podman to find it; ``org.freebsd.os`` says the truth). That manifest has one
layer, whose ``org.opencontainers.image.title`` is the disk's file name (``…qcow2.zst``).

``fpvm machine init --image docker://…`` follows the same rules. The layout of the artifact is shared
with ``fpvm image package`` (fpvm.image.oci), which imports the names from here.

The registry client is oras-py (the ORAS project's Python SDK): it speaks the distribution API with
token authentication and the credentials of ``~/.docker/config.json``, on every host fpvm supports;
skopeo, which podman users on Linux have, is not installed by Homebrew's podman.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpvm import arch as archmod
from fpvm.fsutil import sha256_file
from fpvm.machine.errors import MachineError

INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.list.v2+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
ARTIFACT_TYPE = "application/vnd.fpvm.disk.v1"
TITLE = "org.opencontainers.image.title"
DISKTYPE = "disktype"
PODMAN_OS = "linux"  # podman's machineOS constant: it never looks for another

# podman's disk type per provider, and the disk format that provider boots.
DISK_FORMATS: dict[str, str] = {"qemu": "qcow2", "applehv": "raw", "hyperv": "vhdx"}
# fpvm's own launcher boots raw or qcow2; raw first (nothing to convert, sparse on every file system).
FPVM_DISKTYPES: tuple[str, ...] = ("applehv", "qemu")
DEFAULT_TAG = "latest"
CHUNK = 1 << 20


def podman_arch(arch: str) -> str:
    """podman's platform.architecture for a disk: ``x86_64`` or ``aarch64`` (never amd64/arm64)."""
    return archmod.qemu_name(arch)


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


def parse_reference(ref: str) -> Reference:
    """``docker://REGISTRY/NAME[:TAG]`` (the transport podman uses); an untagged name means ``latest``."""
    if not ref.startswith("docker://"):
        raise MachineError(f"{ref}: an image reference starts with docker:// (docker://REGISTRY/NAME:TAG)")
    rest = ref[len("docker://") :]
    if "/" not in rest or rest.startswith("/") or "@" in rest:
        raise MachineError(f"{ref}: expected docker://REGISTRY/NAME[:TAG] (digests are not supported)")
    registry, path = rest.split("/", 1)
    name, _, tag = path.rpartition(":") if ":" in path else (path, "", DEFAULT_TAG)
    if not name or not tag:
        raise MachineError(f"{ref}: expected docker://REGISTRY/NAME[:TAG]")
    return Reference(registry, name, tag)


def select(index: dict[str, Any], disktype: str, arch: str) -> dict[str, Any] | None:
    """The index entry podman would take for ``disktype`` on ``arch`` (first match, podman's order)."""
    for entry in index.get("manifests", []):
        annotations = entry.get("annotations") or {}
        platform = entry.get("platform") or {}
        if DISKTYPE not in annotations:
            continue
        if platform.get("architecture") != podman_arch(arch) or platform.get("os") != PODMAN_OS:
            continue
        if annotations[DISKTYPE] == disktype:
            return dict(entry)
    return None


def client(registry: str, tls_verify: bool) -> Any:
    """An oras-py provider for ``registry``. Without TLS verification, like podman's
    ``--tls-verify=false``, a registry that does not speak TLS at all is reached over plain http."""
    import requests
    from oras.provider import Registry

    if tls_verify:
        return Registry(hostname=registry, tls_verify=True)
    try:
        requests.get(f"https://{registry}/v2/", verify=False, timeout=10)
    except requests.exceptions.ConnectionError:  # SSLError included: the registry speaks no TLS
        return Registry(hostname=registry, insecure=True)
    return Registry(hostname=registry, tls_verify=False)


def cache_dir() -> Path:
    from fpvm.machine.state import data_home

    return data_home() / "fpvm" / "cache" / "images"


def fetch(ref: str, arch: str, *, tls_verify: bool = True, show_progress: bool = True) -> Path:
    """The compressed disk for ``arch`` from ``ref``, in the cache (downloaded once per digest).

    The file is named ``<layer sha256>.<format>.<compression>`` (podman 5.8.2 names its cache file after
    the manifest's digest, with the same suffix); its digest is
    checked while it downloads and a mismatch leaves nothing behind.
    """
    import requests

    from fpvm.progress import progress

    parsed = parse_reference(ref)
    try:
        registry = client(parsed.registry, tls_verify)
        index = registry.get_manifest(
            parsed.name, allowed_media_type=[INDEX_MEDIA_TYPE, DOCKER_LIST_MEDIA_TYPE]
        )
        if index.get("mediaType") not in (INDEX_MEDIA_TYPE, DOCKER_LIST_MEDIA_TYPE):
            raise MachineError(f"{ref} is not an image index of machine disks ({index.get('mediaType')})")
        entry = next((e for t in FPVM_DISKTYPES if (e := select(index, t, arch))), None)
        if entry is None:
            have = [_label(e) for e in index.get("manifests", [])]
            raise MachineError(
                f"{ref} has no {podman_arch(arch)} disk for fpvm (raw or qcow2); it lists: {', '.join(have)}"
            )
        manifest = registry.get_manifest(f"{parsed.registry}/{parsed.repository}@{entry['digest']}",
                                         allowed_media_type=[MANIFEST_MEDIA_TYPE])  # fmt: skip
        layers = manifest.get("layers", [])
        if len(layers) != 1 or TITLE not in (layers[0].get("annotations") or {}):
            raise MachineError(f"{ref}: a machine disk manifest has exactly one layer with a {TITLE}")
        layer = layers[0]
        digest = str(layer["digest"])
        if not digest.startswith("sha256:"):
            raise MachineError(f"{ref}: unsupported digest {digest}")
        title = str(layer["annotations"][TITLE])
        suffix = "." + ".".join(title.rsplit(".", 2)[-2:])
        cached = cache_dir() / (digest.split(":", 1)[1] + suffix)
        if cached.is_file() and "sha256:" + sha256_file(cached) == digest:
            return cached
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".pull-", dir=cached.parent)
        tmp = Path(tmp_name)
        try:
            hasher = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, progress(title, int(layer.get("size") or 0) or None,
                                                      show_progress) as advance:  # fmt: skip
                response = registry.get_blob(f"{parsed.registry}/{parsed.repository}", digest, stream=True)
                response.raise_for_status()
                for chunk in response.iter_content(chunk_size=CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    advance(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            got = "sha256:" + hasher.hexdigest()
            if got != digest:
                raise MachineError(f"{ref}: the disk blob's digest is {got}, the manifest says {digest}")
            os.replace(tmp, cached)
        finally:
            tmp.unlink(missing_ok=True)
        return cached
    except MachineError:
        raise
    except (requests.exceptions.RequestException, ValueError, KeyError, OSError) as exc:
        raise MachineError(f"cannot pull {ref}: {exc}") from None


def _label(entry: dict[str, Any]) -> str:
    disktype = (entry.get("annotations") or {}).get(DISKTYPE)
    return f"{disktype}/{(entry.get('platform') or {}).get('architecture')}"

