"""fw_cfg through a mounted qemufwcfg file system (davidchisnall/qemufwcfg, NetBSD's mount_qemufwcfg).

The out-of-tree FreeBSD module plus its FUSE tool expose every item as a file named by its fw_cfg name,
slashes becoming directories: ``-fw_cfg name=opt/com.coreos/config`` is ``<mountpoint>/opt/com.coreos/config``
(the 2023 prototype mounted it on ``/var/run/qemufwcfg``). fpvm no longer needs it, but an image that has
it mounted is used as is. The mount does not expose selector keys.
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path

from fpvm.fwcfg.protocol import (
    DEFAULT_MAX_SIZE,
    Entry,
    EntryNotFoundError,
    FwCfgError,
    NoDeviceError,
    check_name,
)

DEFAULT_MOUNT = "/var/run/qemufwcfg"


class MountDevice:
    def __init__(self, mountpoint: str | Path = DEFAULT_MOUNT, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.root = Path(mountpoint)
        self.max_size = max_size
        self.description = f"qemufwcfg mount {self.root}"
        # The port's package creates the directory; only a populated one means the file system is mounted.
        try:
            populated = self.root.is_dir() and any(self.root.iterdir())
        except OSError:
            populated = False
        if not populated:
            raise NoDeviceError(f"no qemufwcfg file system mounted on {self.root}")

    def list(self) -> builtins.list[Entry]:
        entries = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for filename in sorted(filenames):
                path = Path(dirpath) / filename
                entries.append(
                    Entry(name=path.relative_to(self.root).as_posix(), size=path.stat().st_size, select=None)
                )
        return entries

    def read(self, name: str) -> bytes:
        check_name(name)
        path = self.root / name
        if ".." in Path(name).parts or name.startswith("/") or not path.is_file():
            raise EntryNotFoundError(f"fw_cfg has no entry named {name!r} ({path} not found)")
        if path.stat().st_size > self.max_size:
            raise FwCfgError(f"fw_cfg entry {name!r} is larger than the {self.max_size}-byte limit")
        return path.read_bytes()

    def close(self) -> None:
        pass
