"""Helpers of the host launcher tests: the fpvm command of this area, a stand-in disk, fixture paths."""

from __future__ import annotations

import argparse
from pathlib import Path

from fpvm.machine import cli
from podman_fixtures import PODMAN_CAPTURE, PODMAN_IGNITION

HERE = Path(__file__).resolve().parent
# The one stand-in QEMU (its docstring lists what it plays); the podman contract tests use it too.
FAKE_QEMU = HERE.parent / "contract" / "standins" / "qemu.py"
__all__ = ["FAKE_QEMU", "PODMAN_CAPTURE", "PODMAN_IGNITION", "fpvm", "make_disk"]


def fpvm(*argv: str) -> int:
    """Run ``fpvm ARGV`` through this area's own parser (the same register() the fpvm command uses)."""
    parser = argparse.ArgumentParser(prog="fpvm")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


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
