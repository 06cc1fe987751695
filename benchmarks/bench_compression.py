"""zstd (several levels, multithreaded, python-zstandard) vs xz (lzma) on a 1 GiB image-like file.

Run: ``.venv/bin/python benchmarks/bench_compression.py --files /usr [--size-mib 1024] [--keep FILE]``
(real files, as in docs/image.md; without ``--files`` the data is synthetic).
Prints compressed size, ratio, compression and decompression time for each codec, side by side, so
the default of ``fpvm build --compress`` (and its zstd level) can be chosen on data shaped like a
FreeBSD UFS image: long zero runs (free blocks), text (configs, scripts, man pages), low-entropy
binary (executables, libraries) and incompressible data (already compressed packages and caches).
Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import lzma
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import zstandard

BLOCK = 64 << 10
CHUNK = 1 << 20
# share of 64 KiB blocks by kind, roughly a fresh podman image: mostly free space
MIX = (("zero", 0.55), ("text", 0.15), ("binary", 0.18), ("random", 0.12))
WORDS = tuple(
    " ".join(
        (
            "the of and to in is for on with as by be this that from or are at an it which kernel module",
            "loader rc conf enable YES NO usr local etc bin sbin lib libexec share man podman container",
            "image socket network vtnet0 DHCP sshd pkg FreeBSD amd64 aarch64 virtio p9fs console pf nat",
        )
    ).split(" ")
)


def make_image(path: Path, size: int, seed: int = 15) -> None:
    """Write ``size`` bytes of image-like data, deterministic for a given seed."""
    rng = random.Random(seed)
    text = " ".join(rng.choice(WORDS) + ("\n" if rng.random() < 0.1 else "") for _ in range(40000)).encode()
    opcodes = bytes(
        rng.choice(b"\x00\x48\x89\xe5\x8b\x45\xfc\x83\xc4\x10\xc3\xe8\xff\x0f\x1f\x44")
        for _ in range(1 << 16)
    )
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    zero = bytes(BLOCK)
    with path.open("wb") as out:
        written = 0
        while written < size:
            kind = rng.choices(kinds, weights)[0]
            run = rng.randint(1, 64)  # files and free extents span several blocks
            for _ in range(run):
                if written >= size:
                    break
                if kind == "zero":
                    block = zero
                elif kind == "text":
                    start = rng.randrange(len(text) - BLOCK)
                    block = text[start : start + BLOCK]
                elif kind == "binary":
                    start = rng.randrange(len(opcodes) - BLOCK // 2)
                    block = opcodes[start : start + BLOCK // 2] + rng.randbytes(BLOCK // 16) * 8
                else:
                    block = os.urandom(BLOCK)
                block = block[: size - written]
                out.write(block)
                written += len(block)


def make_image_from_files(path: Path, size: int, source: Path, fill: float = 0.45) -> None:
    """An image made like a file system: real files from ``source`` (executables, libraries, text,
    already-compressed man pages), each padded to 4 KiB blocks, separated by runs of free (zero)
    blocks; ``fill`` of the image holds file data. Closer to a FreeBSD image than synthetic data."""
    rng = random.Random(15)
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.is_symlink())
    budget = int(size * fill)
    with path.open("wb") as out:
        used = 0
        for file in files:
            if used >= budget:
                break
            try:
                data = file.read_bytes()
            except OSError:
                continue
            data = data[: budget - used]
            out.write(data)
            pad = -len(data) % 4096
            out.write(bytes(pad))
            used += len(data) + pad
            if rng.random() < 0.02:  # a free extent between files
                out.write(bytes(rng.randint(1, 256) * 4096))
        out.truncate(size)


def _timed(func: Callable[..., None], *args: Path) -> float:
    start = time.perf_counter()
    func(*args)
    return time.perf_counter() - start


def zstd_codec(level: int) -> tuple[Callable[[Path, Path], None], Callable[[Path], None]]:
    def compress(src: Path, dst: Path) -> None:
        params = zstandard.ZstdCompressionParameters.from_level(level, threads=-1, write_content_size=True)
        with src.open("rb") as fin, dst.open("wb") as fout:
            zstandard.ZstdCompressor(compression_params=params).copy_stream(
                fin, fout, size=src.stat().st_size
            )

    def decompress(src: Path) -> None:
        with src.open("rb") as fin:
            reader = zstandard.ZstdDecompressor().stream_reader(fin)
            while reader.read(CHUNK):
                pass

    return compress, decompress


def xz_codec(preset: int) -> tuple[Callable[[Path, Path], None], Callable[[Path], None]]:
    def compress(src: Path, dst: Path) -> None:
        comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=preset)
        with src.open("rb") as fin, dst.open("wb") as fout:
            while chunk := fin.read(CHUNK):
                fout.write(comp.compress(chunk))
            fout.write(comp.flush())

    def decompress(src: Path) -> None:
        with lzma.open(src, "rb") as fin:
            while fin.read(CHUNK):
                pass

    return compress, decompress


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--zstd-levels", default="3,9,15,19")
    parser.add_argument("--xz-presets", default="6")
    parser.add_argument("--keep", type=Path, help="reuse/keep the generated image at this path")
    parser.add_argument(
        "--files",
        type=Path,
        metavar="DIR",
        help="build the image from the real files under DIR (e.g. /usr) instead of synthetic data",
    )
    args = parser.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="fpvm-bench-") as tmp:
        image = args.keep or Path(tmp) / "image.raw"
        if not (image.is_file() and image.stat().st_size == size):
            print(f"generating {args.size_mib} MiB image-like data ...", flush=True)
            if args.files:
                make_image_from_files(image, size, args.files)
            else:
                make_image(image, size)
        codecs: list[tuple[str, tuple[Callable[[Path, Path], None], Callable[[Path], None]]]] = [
            (f"zstd -{lvl} -T0", zstd_codec(int(lvl))) for lvl in args.zstd_levels.split(",")
        ]
        codecs += [(f"xz -{p}", xz_codec(int(p))) for p in args.xz_presets.split(",")]
        print(f"cpus: {os.cpu_count()}  input: {size / (1 << 20):.0f} MiB")
        print(f"{'codec':<14}{'size MiB':>10}{'ratio':>8}{'compress s':>12}{'decompress s':>14}")
        for label, (compress, decompress) in codecs:
            out = Path(tmp) / "packed"
            c_time = _timed(compress, image, out)
            packed = out.stat().st_size
            d_time = _timed(decompress, out)
            print(
                f"{label:<14}{packed / (1 << 20):>10.1f}{size / packed:>8.2f}{c_time:>12.1f}{d_time:>14.2f}",
                flush=True,
            )
            out.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
