"""What a build leaves behind: the image in its format, compressed, with a SHA256 file.

raw is the source of truth (podman's macOS providers take raw only); qcow2 (podman's qemu provider) and
vhdx (its hyperv provider: a dynamic VHDX, which is what Hyper-V attaches) come from ``qemu-img convert
-f raw -O FORMAT`` with both formats explicit, so QEMU never probes. Compression
runs in-process (zstandard, lzma) so no zstd/xz binary is needed on the build host; podman decompresses
either by content. The default zstd level comes from benchmarks/bench_compression.py.
"""

from __future__ import annotations

import contextlib
import lzma
import os
from collections.abc import Iterable
from pathlib import Path

from fpvm.fsutil import fsync_dir, sha256_file
from fpvm.image import plan
from fpvm.image.plan import Step

# qemu-img's options per converted format (raw is moved, not converted).
CONVERT: dict[str, tuple[str, ...]] = {"qcow2": (), "vhdx": ("-o", "subformat=dynamic")}

ZSTD_LEVEL = 19
XZ_PRESET = 6
_CHUNK = 1 << 20



def _replace_from_tmp(tmp: Path, dest: Path) -> None:
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def compress(source: Path, dest: Path, kind: str, level: int | None = None, threads: int = -1) -> None:
    """Compress ``source`` into ``dest`` (``zst`` or ``xz``); nothing is left at ``dest`` on failure."""
    tmp = dest.with_name(f".{dest.name}.fpvm-tmp")
    try:
        with source.open("rb") as src, tmp.open("wb") as out:
            if kind == "zst":
                import zstandard

                params = zstandard.ZstdCompressionParameters.from_level(
                    ZSTD_LEVEL if level is None else level, threads=threads, write_content_size=True
                )
                cctx = zstandard.ZstdCompressor(compression_params=params)
                cctx.copy_stream(src, out, size=source.stat().st_size, read_size=_CHUNK, write_size=_CHUNK)
            elif kind == "xz":
                comp = lzma.LZMACompressor(
                    format=lzma.FORMAT_XZ,
                    check=lzma.CHECK_CRC64,
                    preset=XZ_PRESET if level is None else level,
                )
                while chunk := src.read(_CHUNK):
                    out.write(comp.compress(chunk))
                out.write(comp.flush())
            else:
                raise ValueError(f"unknown compression {kind!r}")
        _replace_from_tmp(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def decompress_xz(source: Path, dest: Path) -> None:
    """Unpack an ``.xz`` download (FreeBSD's VM images) into ``dest``, atomically, sparse where zero."""
    tmp = dest.with_name(f".{dest.name}.fpvm-tmp")
    try:
        with lzma.open(source, "rb") as src, tmp.open("wb") as out:
            zero = bytes(_CHUNK)
            while chunk := src.read(_CHUNK):
                if chunk == zero[: len(chunk)]:
                    out.seek(len(chunk), os.SEEK_CUR)
                else:
                    out.write(chunk)
            out.truncate()
        _replace_from_tmp(tmp, dest)
    except lzma.LZMAError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise plan.BuildError(f"{source} is not a valid xz file: {exc}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_sha256(path: Path) -> Path:
    """``NAME.sha256`` in the ``sha256sum -c`` / ``shasum -a 256 -c`` format."""
    side = path.with_name(path.name + ".sha256")
    tmp = side.with_name(f".{side.name}.fpvm-tmp")
    tmp.write_text(f"{sha256_file(path)}  {path.name}\n")
    _replace_from_tmp(tmp, side)
    return side


def remove(paths: Iterable[Path]) -> None:
    """Remove partial outputs; a missing file is fine."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def output_steps(
    raw: Path, output_dir: Path, image_name: str, fmt: str, compression: str, zstd_level: int = ZSTD_LEVEL
) -> list[Step]:
    """Steps turning the built ``raw`` image into the deliverables in ``output_dir``."""
    steps: list[Step] = []
    image = output_dir / image_name
    if fmt in CONVERT:
        steps.append(
            plan.command(
                f"convert to {fmt}",
                *("qemu-img", "convert", "-f", "raw", "-O", fmt, *CONVERT[fmt], str(raw), str(image)),
            )
        )
    elif raw != image:
        steps.append(plan.action("place the raw image", lambda: _move(raw, image), f"move {raw} to {image}"))
    final = image
    if compression != "none":
        final = image.with_name(image.name + f".{compression}")
        how = f"zstd level {zstd_level}, all cores" if compression == "zst" else f"xz preset {XZ_PRESET}"
        level = zstd_level if compression == "zst" else None
        target = final

        def squeeze() -> None:
            compress(image, target, compression, level)
            image.unlink()

        steps.append(
            plan.action(
                f"compress ({compression})",
                squeeze,
                f"compress {image} to {final} ({how}) and remove {image.name}",
            )
        )
    steps.append(plan.action("checksum", lambda: _sha256_step(final), f"write {final}.sha256"))
    return steps


def _sha256_step(path: Path) -> None:
    write_sha256(path)


def _move(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)
    fsync_dir(dest.parent)
