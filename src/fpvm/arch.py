"""Architecture names.

Users type either FreeBSD's names or the Linux/QEMU ones; files and FreeBSD's pkg ABI use FreeBSD's
(``amd64``, ``aarch64``), QEMU uses its own (``x86_64``, ``aarch64``). Normalise once, at the edge.
"""

from __future__ import annotations

import argparse
import platform

ARCHES: tuple[str, ...] = ("amd64", "aarch64")

_SYNONYMS: dict[str, str] = {
    "amd64": "amd64",
    "x86_64": "amd64",
    "x64": "amd64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
}

# FreeBSD arch name -> (QEMU system emulator suffix, FreeBSD MACHINE, MACHINE_ARCH)
_QEMU: dict[str, str] = {"amd64": "x86_64", "aarch64": "aarch64"}
_MACHINE: dict[str, str] = {"amd64": "amd64", "aarch64": "arm64"}


class ArchError(ValueError):
    """An architecture name fpvm does not know."""


def normalize(name: str) -> str:
    """Return FreeBSD's name for ``name`` (case-insensitive); raise ArchError for unknown names."""
    try:
        return _SYNONYMS[name.strip().lower()]
    except KeyError:
        raise ArchError(f"unknown architecture {name!r}: use amd64 (x86_64) or aarch64 (arm64)") from None


def qemu_name(arch: str) -> str:
    """QEMU's name, as in ``qemu-system-<name>``."""
    return _QEMU[normalize(arch)]


def freebsd_machine(arch: str) -> str:
    """FreeBSD's MACHINE (``amd64``, ``arm64``): used in download URLs and pkg ABI strings."""
    return _MACHINE[normalize(arch)]


def host() -> str:
    """The architecture of the machine we run on, in FreeBSD's naming."""
    return normalize(platform.machine())


def argparse_type(value: str) -> str:
    """``type=`` for every ``--arch`` option: accepts synonyms, yields FreeBSD's name."""
    try:
        return normalize(value)
    except ArchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
