"""fw_cfg through Linux's qemu_fw_cfg driver (sysfs), for Linux guests and for comparison.

Documentation/ABI/testing/sysfs-firmware-qemu_fw_cfg: ``/sys/firmware/qemu_fw_cfg/by_key/<key>/`` holds
``name``, ``size``, ``key`` and ``raw`` for each item, and ``by_name/<name>`` is a tree of symlinks
(one directory level per ``/`` in the name) to those directories. The directory is a parameter so the
tests, and a copy of the tree, can stand in for the real one.
"""

from __future__ import annotations

import builtins
from pathlib import Path

from fpvm.fwcfg.protocol import (
    DEFAULT_MAX_SIZE,
    Entry,
    EntryNotFoundError,
    FwCfgError,
    NoDeviceError,
    check_name,
)

DEFAULT_ROOT = "/sys/firmware/qemu_fw_cfg"


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").strip()


class SysfsDevice:
    def __init__(self, root: str | Path = DEFAULT_ROOT, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.root = Path(root)
        self.max_size = max_size
        self.description = f"Linux sysfs {self.root}"
        if not (self.root / "by_key").is_dir():
            raise NoDeviceError(f"{self.root}/by_key not found (is the qemu_fw_cfg module loaded?)")

    def list(self) -> builtins.list[Entry]:
        entries = []
        for item in sorted(
            (self.root / "by_key").iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1
        ):
            try:
                entries.append(
                    Entry(name=_text(item / "name"), size=int(_text(item / "size")), select=int(item.name))
                )
            except (OSError, ValueError) as exc:
                raise FwCfgError(f"{item}: unreadable fw_cfg item ({exc})") from None
        return entries

    def read(self, name: str) -> bytes:
        check_name(name)
        raw = self.root / "by_name" / name / "raw"
        if ".." in Path(name).parts or not raw.is_file():
            raise EntryNotFoundError(f"fw_cfg has no entry named {name!r} ({raw} not found)")
        size = raw.parent / "size"
        if size.is_file() and int(_text(size)) > self.max_size:
            raise FwCfgError(f"fw_cfg entry {name!r} is larger than the {self.max_size}-byte limit")
        return raw.read_bytes()

    def close(self) -> None:
        pass
