"""Bring a FreeBSD disk image into a machine directory: copy or download, decompress, check, grow.

The compression is detected from the first bytes, not the file name, as podman does (people rename
files, and URLs often have no suffix). The decompressed stream is checked for a disk image signature
before most of it is written, so a wrong file (an HTML error page, an ISO, a tarball) fails in a second
with a clear message instead of booting into nothing. Zero blocks are skipped, so a 100 GiB raw disk
costs only what it holds.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil
import subprocess
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from fpvm.machine.errors import MachineError
from fpvm.progress import progress

CHUNK = 1 << 20
HEAD = 64 * 1024

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
)


def compression_of(head: bytes) -> str | None:
    """``zstd``, ``xz``, ``gzip``, ``bzip2`` or None (uncompressed), from the first bytes."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def disk_format_of(head: bytes) -> str | None:
    """``qcow2`` or ``raw`` when ``head`` starts a disk image; None when it does not look like one.

    raw must carry a partition table: an MBR/PMBR boot signature (0x55AA at 510) or a GPT header at
    LBA 1. Every bootable FreeBSD image has both; a bare filesystem image would not boot anyway.
    """
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    if len(head) >= 512 and head[510:512] == b"\x55\xaa":
        return "raw"
    for lba in (512, 4096):
        if head[lba : lba + 8] == b"EFI PART":
            return "raw"
    return None


class _Counting:
    """A read-only stream that reports how many compressed bytes went through (for the progress bar)."""

    def __init__(self, raw: IO[bytes], advance: Callable[[int], None]) -> None:
        self.raw = raw
        self.advance = advance

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.advance(len(data))
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()


def _decompressor(kind: str | None, raw: Any) -> Any:
    if kind is None:
        return raw
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(raw, "rb")
    if kind == "bzip2":
        return bz2.BZ2File(raw, "rb")
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)


class _Peeked:
    """A stream whose first bytes were already read to sniff it."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head = head
        self.rest = rest

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0:
                data, self.head = self.head + self.rest.read(), b""
                return data
            data, self.head = self.head[:n], self.head[n:]
            if len(data) < n:
                data += self.rest.read(n - len(data))
            return data
        return self.rest.read(n)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.rest.close()


def _read_full(stream: Any, n: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < n:
        data = stream.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


@contextmanager
def _open_source(source: str) -> Iterator[tuple[IO[bytes], int | None, str]]:
    """(stream, size or None, label) for a local path or an http(s) URL."""
    if source.startswith(("http://", "https://")):
        try:
            response = urllib.request.urlopen(source, timeout=60)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise MachineError(f"cannot download {source}: {exc}") from None
        length = response.headers.get("Content-Length")
        try:
            yield response, int(length) if length and length.isdigit() else None, source.rsplit("/", 1)[-1]
        finally:
            response.close()
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise MachineError(f"image {source} does not exist")
    if not path.is_file():
        raise MachineError(f"image {source} is not a file")
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise MachineError(f"cannot read image {source}: {exc}") from None
    with fh:
        yield fh, path.stat().st_size, path.name


def acquire(source: str, dest: Path) -> str:
    """Copy or download ``source`` into ``dest``, decompressed; return the disk format (raw/qcow2).

    Raises MachineError when the source is missing, unreadable, corrupt or not a disk image; ``dest``
    may then hold a partial file, which the caller's temporary directory takes away.
    """
    with _open_source(source) as (raw, size, label), progress(f"image {label}", size) as advance:
        counting = _Counting(raw, advance)
        sniff = _read_full(counting, 8)
        kind = compression_of(sniff)
        stream = _decompressor(kind, _Peeked(sniff, counting))  # type: ignore[arg-type]
        try:
            head = _read_full(stream, HEAD)
        except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
            raise MachineError(f"image {source}: cannot decompress ({kind}): {exc}") from None
        fmt = disk_format_of(head)
        if fmt is None:
            what = f"{kind}-compressed data" if kind else "this file"
            example = "fpvm-RELEASE-amd64.raw.zst or -aarch64.raw.zst"
            raise MachineError(
                f"image {source} is not a disk image: {what} has no partition table (MBR/GPT) and is not "
                f"qcow2. Use an fpvm image ({example}, made by `fpvm build`): "
                "a stock FreeBSD image boots but has no fpvm agent, so it never becomes Ready."
            )
        try:
            _write_sparse(_Peeked(head, stream), dest)
        except (EOFError, lzma.LZMAError, zlib.error, ValueError) as exc:
            raise MachineError(f"image {source}: corrupt {kind} data: {exc}") from None
        except OSError as exc:
            raise MachineError(f"image {source}: {exc}") from None
    return fmt


def _write_sparse(stream: Any, dest: Path) -> None:
    zero = bytes(CHUNK)
    total = 0
    with dest.open("wb") as out:
        while True:
            block = _read_full(stream, CHUNK)
            if not block:
                break
            if block == zero[: len(block)]:
                out.seek(len(block), os.SEEK_CUR)
            else:
                out.write(block)
            total += len(block)
        out.truncate(total)


def virtual_size(path: Path, fmt: str) -> int:
    """Disk size in bytes as the guest sees it."""
    if fmt == "raw":
        return path.stat().st_size
    out = _qemu_img(["info", "--output", "json", "-f", fmt, str(path)])
    return int(json.loads(out)["virtual-size"])


def grow(path: Path, fmt: str, size_gib: int) -> None:
    """Grow the disk to ``size_gib``; the guest grows its partition and filesystem at boot.

    ``qemu-img resize -f FMT`` (no probing) when available, else ``truncate`` for raw. A requested
    size smaller than the image is refused: shrinking would cut the filesystem.
    """
    want = size_gib << 30
    have = virtual_size(path, fmt)
    if want < have:
        raise MachineError(
            f"--disk-size {size_gib} GiB is smaller than the image ({have / (1 << 30):.1f} GiB): "
            "choose a larger size"
        )
    if want == have:
        return
    if shutil.which("qemu-img"):
        _qemu_img(["resize", "-q", "-f", fmt, str(path), f"{size_gib}G"])
    elif fmt == "raw":
        os.truncate(path, want)
    else:
        raise MachineError("qemu-img is needed to grow a qcow2 image: install QEMU (it ships qemu-img)")


def _qemu_img(args: list[str]) -> str:
    exe = shutil.which("qemu-img")
    if not exe:
        raise MachineError("qemu-img not found: install QEMU (brew install qemu / apt install qemu-utils)")
    result = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise MachineError(f"qemu-img {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout
