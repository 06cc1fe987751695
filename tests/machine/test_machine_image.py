"""Image intake: compression by content, disk-image check, sparse copy, growing with the real qemu-img."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import subprocess
from pathlib import Path

import pytest
import zstandard
from machine_support import make_disk

from fpvm.machine import image
from fpvm.machine.errors import MachineError


def _compress(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        return gzip.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    if kind == "bzip2":
        return bz2.compress(data)
    if kind == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


@pytest.mark.parametrize("kind", ["none", "gzip", "xz", "bzip2", "zstd"])
def test_acquire_decompresses_by_content_whatever_the_name(tmp_path: Path, kind: str) -> None:
    raw = make_disk(tmp_path / "src.raw", 3 << 20)
    payload = bytearray(raw.read_bytes())
    payload[2 << 20 : (2 << 20) + 5] = b"hello"  # data after a zero MiB: the hole must not eat it
    src = tmp_path / "image.bin"  # no telling suffix
    src.write_bytes(_compress(kind, bytes(payload)))
    dest = tmp_path / "disk.img"
    assert image.acquire(str(src), dest) == "raw"
    assert dest.read_bytes() == bytes(payload)
    # The zero MiB was skipped, not written.
    assert dest.stat().st_blocks * 512 < len(payload)


def test_qcow2_is_recognised(tmp_path: Path) -> None:
    src = tmp_path / "img.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "64M"], check=True)
    dest = tmp_path / "disk.img"
    assert image.acquire(str(src), dest) == "qcow2"
    image.grow(dest, "qcow2", 1)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output", "json", str(dest)], capture_output=True, check=True
        ).stdout
    )
    assert info["format"] == "qcow2" and info["virtual-size"] == 1 << 30


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"<html><body>404 Not Found</body></html>\n" * 40, "this file has no partition table"),
        (gzip.compress(b"not a disk\n" * 1000), "gzip-compressed data has no partition table"),
        (b"", "this file has no partition table"),
    ],
)
def test_not_a_disk_image(tmp_path: Path, content: bytes, what: str) -> None:
    src = tmp_path / "download.raw.gz"
    src.write_bytes(content)
    with pytest.raises(MachineError, match=f"is not a disk image: {what}"):
        image.acquire(str(src), tmp_path / "disk.img")


def test_corrupt_compressed_image(tmp_path: Path) -> None:
    data = lzma.compress(make_disk(tmp_path / "d.raw", 2 << 20).read_bytes())
    src = tmp_path / "trunc.raw.xz"
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(MachineError, match="xz"):
        image.acquire(str(src), tmp_path / "disk.img")


def test_missing_image(tmp_path: Path) -> None:
    with pytest.raises(MachineError, match="does not exist"):
        image.acquire(str(tmp_path / "nope.raw"), tmp_path / "disk.img")


def test_grow_raw_with_qemu_img_and_refuse_shrink(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "d.raw", 4 << 20)
    image.grow(disk, "raw", 2)
    assert disk.stat().st_size == 2 << 30
    with disk.open("rb") as fh:
        assert fh.read(512)[510:] == b"\x55\xaa"
    with pytest.raises(MachineError, match="smaller than the image"):
        image.grow(disk, "raw", 1)


def test_grow_raw_without_qemu_img_truncates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-img on PATH
    disk = make_disk(tmp_path / "d.raw", 4 << 20)
    image.grow(disk, "raw", 1)
    assert disk.stat().st_size == 1 << 30
