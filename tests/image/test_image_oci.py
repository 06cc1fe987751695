"""OCI disk artifacts: `fpvm image package/push` and `fpvm machine init --image docker://…`.

Real peers: Debian's docker-registry on 127.0.0.1, skopeo, qemu-img. podman's selection rules are
re-implemented here from pkg/machine/ocipull (GetDiskArtifactReference, getOriginalFileName), not taken
from fpvm, so that fpvm's own selection is checked against them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from image_registry import LoopbackRegistry, loopback_registry

from fpvm.machine import registry as reg
from fpvm.machine.errors import MachineError
from fpvm_runner import run_fpvm

RELEASE = "15.1-RELEASE"


def _raw_disk(path: Path, seed: int, size: int = 3 << 20) -> bytes:
    """A small raw disk: protective MBR + GPT signatures, then seeded non-zero data and a zero tail."""
    head = bytearray(1024)
    head[450] = 0xEE
    head[510:512] = b"\x55\xaa"
    head[512:520] = b"EFI PART"
    body = hashlib.sha256(str(seed).encode()).digest() * (size // 2 // 32)
    data = bytes(head) + body + bytes(size - len(head) - len(body))
    path.write_bytes(data)
    return data


def _zst(source: Path, dest: Path) -> Path:
    dest.write_bytes(zstandard.ZstdCompressor(level=3).compress(source.read_bytes()))
    return dest


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("disks")
    out: dict[str, Any] = {"dir": d, "raw": {}}
    for i, arch in enumerate(("amd64", "aarch64")):
        raw = d / f"plain-{arch}.raw"
        out["raw"][arch] = _raw_disk(raw, i)
        _zst(raw, d / f"fpvm-{RELEASE}-{arch}.raw.zst")
        qcow2 = d / f"plain-{arch}.qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True)
        _zst(qcow2, d / f"fpvm-{RELEASE}-{arch}.qcow2.zst")
    out["files"] = sorted(d.glob("fpvm-*.zst"))
    return out


def _package(disks: dict[str, Any], layout: Path) -> subprocess.CompletedProcess[str]:
    res = run_fpvm("image", "package", str(layout), *map(str, disks["files"]))
    assert res.returncode == 0, res.stderr
    return res


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def _index(layout: Path) -> dict[str, Any]:
    top = json.loads((layout / "index.json").read_text())["manifests"][0]
    data: dict[str, Any] = json.loads(_blob(layout, top["digest"]))
    return data


def podman_pick(index: dict[str, Any], manifests: dict[str, dict[str, Any]], disktype: str, arch: str) -> str:
    """podman's rules: first entry with annotations.disktype == disktype, platform.architecture == arch
    (x86_64/aarch64) and platform.os == "linux"; its manifest has exactly one layer with a title."""
    for entry in index["manifests"]:
        annotations = entry.get("annotations") or {}
        if "disktype" not in annotations:
            continue
        if entry["platform"]["architecture"] != arch or entry["platform"]["os"] != "linux":
            continue
        if annotations["disktype"] != disktype:
            continue
        layers = manifests[entry["digest"]]["layers"]
        assert len(layers) == 1, "podman-machine images should only have 1 layer"
        return str(layers[0]["annotations"]["org.opencontainers.image.title"])
    raise AssertionError(f"podman finds no {disktype}/{arch} disk")


def test_layout_is_valid_reproducible_and_what_podman_selects(disks: dict[str, Any], tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    out = _package(disks, first).stdout
    _package(disks, second)
    assert (first / "index.json").read_bytes() == (second / "index.json").read_bytes()
    assert sorted(p.name for p in (first / "blobs/sha256").iterdir()) == sorted(
        p.name for p in (second / "blobs/sha256").iterdir()
    )
    assert "qemu/amd64: fpvm-15.1-RELEASE-qemu.x86_64.qcow2.zst" in out
    # The layout validates (oras-py's OCI layout checks; skopeo reads it as an OCI transport).
    from oras.layout.layout import Layout

    Layout(str(first), validate=True)
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{first}:15.1"], capture_output=True, check=True)
    index = json.loads(raw.stdout)
    assert index == _index(first) and index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    # Every blob's digest and size is what its descriptor says; the schemas of the spec hold.
    import jsonschema
    from oras import schemas

    jsonschema.validate(index, schema=schemas.index)
    manifests = {}
    for entry in index["manifests"]:
        body = _blob(first, entry["digest"])
        assert len(body) == entry["size"] and "sha256:" + hashlib.sha256(body).hexdigest() == entry["digest"]
        manifest = json.loads(body)
        jsonschema.validate(manifest, schema=schemas.manifest)
        layer = manifest["layers"][0]
        disk = _blob(first, layer["digest"])
        assert len(disk) == layer["size"] and layer["mediaType"] == "application/zstd"
        manifests[entry["digest"]] = manifest
    # podman's qemu provider on both architectures, and an applehv-style raw disk.
    assert podman_pick(index, manifests, "qemu", "x86_64") == "fpvm-15.1-RELEASE-qemu.x86_64.qcow2.zst"
    assert podman_pick(index, manifests, "qemu", "aarch64") == "fpvm-15.1-RELEASE-qemu.aarch64.qcow2.zst"
    assert podman_pick(index, manifests, "applehv", "aarch64") == "fpvm-15.1-RELEASE-applehv.aarch64.raw.zst"
    with pytest.raises(AssertionError, match="finds no hyperv"):
        podman_pick(index, manifests, "hyperv", "x86_64")
    # fpvm's own selection agrees with podman's.
    for disktype in ("qemu", "applehv"):
        for arch in ("amd64", "aarch64"):
            entry = reg.select(index, disktype, arch)
            assert entry is not None
            title = manifests[entry["digest"]]["layers"][0]["annotations"]["org.opencontainers.image.title"]
            assert title == podman_pick(index, manifests, disktype, reg.podman_arch(arch))


def test_oci_archive_is_reproducible(disks: dict[str, Any], tmp_path: Path) -> None:
    for name in ("one", "two"):
        res = run_fpvm("image", "package", str(tmp_path / f"{name}-layout"), *map(str, disks["files"]),
                       "--archive", str(tmp_path / f"{name}.tar"))  # fmt: skip
        assert res.returncode == 0, res.stderr
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{tmp_path / 'one.tar'}:15.1"],
                         capture_output=True, check=True)  # fmt: skip
    assert json.loads(raw.stdout) == _index(tmp_path / "one-layout")


def test_package_refuses_what_podman_could_not_use(disks: dict[str, Any], tmp_path: Path) -> None:
    odd = tmp_path / "disk.img"
    odd.write_bytes(b"x")
    res = run_fpvm("image", "package", str(tmp_path / "l"), str(odd))
    assert res.returncode == 1 and "not an fpvm build output" in res.stderr and "Traceback" not in res.stderr
    twin = tmp_path / "fpvm-15.0-RELEASE-amd64.qcow2.zst"
    twin.write_bytes(disks["files"][0].read_bytes())
    qemu_amd64 = next(p for p in disks["files"] if p.name.endswith("amd64.qcow2.zst"))
    res = run_fpvm("image", "package", str(tmp_path / "l2"), str(qemu_amd64), str(twin))
    assert res.returncode == 1 and "two qcow2 disks for amd64" in res.stderr


def test_references() -> None:
    parsed = reg.parse_reference("docker://127.0.0.1:5000/fpvm/disk:15.1")
    assert (parsed.registry, parsed.repository, parsed.tag) == ("127.0.0.1:5000", "fpvm/disk", "15.1")
    assert reg.parse_reference("docker://quay.io/fpvm/disk").tag == "latest"
    for bad in ("quay.io/x:1", "docker://nohost", "docker://q.io/x@sha256:00"):
        with pytest.raises(MachineError, match="docker://"):
            reg.parse_reference(bad)


# -- against a real registry --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackRegistry]:
    with loopback_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="module")
def pushed(
    disks: dict[str, Any], registry: LoopbackRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    layout = tmp_path_factory.mktemp("pushed") / "layout"
    _package(disks, layout)
    refs = [f"docker://{registry.host}/fpvm:{tag}" for tag in ("15.1", "5.8")]
    res = run_fpvm("image", "push", str(layout), *refs, "--tls-verify", "false")
    assert res.returncode == 0, res.stderr
    assert f"pushed {registry.host}/fpvm:5.8" in res.stdout
    return layout


@pytest.fixture
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    home = tmp_path / "h"
    env = {"HOME": str(home), "XDG_DATA_HOME": str(home / "data"), "XDG_RUNTIME_DIR": str(tmp_path / "run"),
           "XDG_CONFIG_HOME": str(home / "config")}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "run").mkdir(mode=0o700)
    return {**os.environ, **env}


@pytest.mark.slow
def test_push_is_what_skopeo_sees(pushed: Path, registry: LoopbackRegistry) -> None:
    for tag in ("15.1", "5.8"):
        argv = ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/fpvm:{tag}"]
        raw = subprocess.run(argv, capture_output=True, check=True)
        assert json.loads(raw.stdout) == _index(pushed)


@pytest.mark.slow
def test_machine_init_pulls_verifies_caches_and_unpacks(
    pushed: Path, registry: LoopbackRegistry, disks: dict[str, Any], private_home: dict[str, str]
) -> None:
    ref = f"docker://{registry.host}/fpvm:15.1"
    cached = reg.fetch(ref, "aarch64", tls_verify=False, show_progress=False)
    assert cached.name.endswith(".raw.zst") and cached.parent == reg.cache_dir()
    unpacked = zstandard.ZstdDecompressor().decompressobj().decompress(cached.read_bytes())
    assert unpacked == disks["raw"]["aarch64"]
    before = cached.stat()
    assert reg.fetch(ref, "aarch64", tls_verify=False, show_progress=False) == cached
    assert cached.stat().st_ino == before.st_ino and cached.stat().st_mtime_ns == before.st_mtime_ns
    res = run_fpvm("machine", "init", "vm", "--image", ref, "--tls-verify", "false", "--arch", "amd64",
                   "--disk-size", "1", env=private_home)  # fmt: skip
    assert res.returncode == 0, res.stderr
    disk = Path(private_home["XDG_DATA_HOME"]) / "fpvm" / "machines" / "vm" / "disk.img"
    raw = disks["raw"]["amd64"]
    with disk.open("rb") as fh:
        assert fh.read(len(raw)) == raw
    assert disk.stat().st_size == 1 << 30


@pytest.mark.slow
def test_a_tampered_blob_is_refused_and_leaves_nothing(
    pushed: Path, registry: LoopbackRegistry, private_home: dict[str, str]
) -> None:
    index = _index(pushed)
    entry = reg.select(index, "applehv", "amd64")
    assert entry is not None
    layer = json.loads(_blob(pushed, entry["digest"]))["layers"][0]
    stored = registry.blob_file(layer["digest"])
    original = stored.read_bytes()
    try:
        stored.write_bytes(bytes(len(original)))
        with pytest.raises(MachineError, match="digest"):
            reg.fetch(f"docker://{registry.host}/fpvm:5.8", "amd64", tls_verify=False, show_progress=False)
        assert list(reg.cache_dir().iterdir()) == []
        res = run_fpvm("machine", "init", "vm", "--image", f"docker://{registry.host}/fpvm:5.8",
                       "--tls-verify", "false", "--arch", "amd64", env=private_home)  # fmt: skip
        assert res.returncode == 1 and "digest" in res.stderr and "Traceback" not in res.stderr
        assert not (Path(private_home["XDG_DATA_HOME"]) / "fpvm" / "machines" / "vm").exists()
    finally:
        stored.write_bytes(original)


@pytest.mark.slow
def test_missing_arch_and_missing_tag_are_clear(
    registry: LoopbackRegistry, disks: dict[str, Any], tmp_path: Path, private_home: dict[str, str]
) -> None:
    layout = tmp_path / "only-qemu-amd64"
    only = next(p for p in disks["files"] if p.name.endswith("amd64.qcow2.zst"))
    assert run_fpvm("image", "package", str(layout), str(only)).returncode == 0
    ref = f"docker://{registry.host}/only:15.1"
    assert run_fpvm("image", "push", str(layout), ref, "--tls-verify", "false").returncode == 0
    with pytest.raises(MachineError, match=r"no aarch64 disk for fpvm.*qemu/x86_64"):
        reg.fetch(ref, "aarch64", tls_verify=False, show_progress=False)
    assert reg.fetch(ref, "amd64", tls_verify=False, show_progress=False).name.endswith(".qcow2.zst")
    with pytest.raises(MachineError, match="cannot pull"):
        reg.fetch(f"docker://{registry.host}/only:9.9", "amd64", tls_verify=False, show_progress=False)


def test_vhdx_disks_are_what_podmans_hyperv_provider_selects(disks: dict[str, Any], tmp_path: Path) -> None:
    raw = tmp_path / "plain.raw"
    _raw_disk(raw, 7)
    vhdx = tmp_path / "plain.vhdx"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic", str(raw),
                    str(vhdx)], check=True)  # fmt: skip
    packed = _zst(vhdx, tmp_path / f"fpvm-{RELEASE}-amd64.vhdx.zst")
    layout = tmp_path / "layout"
    res = run_fpvm("image", "package", str(layout), str(packed), *map(str, disks["files"]))
    assert res.returncode == 0, res.stderr
    index = _index(layout)
    manifests = {e["digest"]: json.loads(_blob(layout, e["digest"])) for e in index["manifests"]}
    assert podman_pick(index, manifests, "hyperv", "x86_64") == "fpvm-15.1-RELEASE-hyperv.x86_64.vhdx.zst"
    assert podman_pick(index, manifests, "qemu", "x86_64").endswith(".qcow2.zst")
