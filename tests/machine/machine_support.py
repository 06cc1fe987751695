"""Helpers of the host launcher tests: the stand-in QEMU, a stand-in disk (fixtures: conftest.py)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
# The one stand-in QEMU (its docstring lists what it plays); the podman contract tests use it too.
FAKE_QEMU = HERE.parent / "contract" / "standins" / "qemu.py"


def make_disk(path: Path, size: int = 4 << 20) -> Path:
    """A stand-in raw disk: a protective MBR signature and a GPT header, the rest zeros."""
    head = bytearray(1024)
    head[446 + 4] = 0xEE  # protective MBR partition type
    head[510:512] = b"\x55\xaa"
    head[512:520] = b"EFI PART"
    with path.open("wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return path
