"""A NoCloud ``cidata`` ISO for the builder VM, written with pycdlib (no genisoimage/xorriso needed).

FreeBSD's nuageinit finds it by its volume label (``/dev/iso9660/cidata``) and runs a ``user-data``
that starts with ``#!``. The ISO carries Rock Ridge and Joliet names so FreeBSD sees the real file
names (``user-data``, ``meta-data``) and keeps executable bits (Lima found that without Joliet the files
are not executable on FreeBSD).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

VOLUME_ID = "cidata"


def _iso_name(index: int) -> str:
    """A plain ISO 9660 level-1 name for the n-th file; readers use the Rock Ridge/Joliet name."""
    return f"/F{index:07d}.;1"


def write_cidata(path: Path, files: Mapping[str, bytes | Path]) -> None:
    """Write an ISO holding ``files`` (name -> bytes, or a host file copied in) at the top level."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_ID)
    handles: list[BinaryIO] = []
    try:
        for index, (name, content) in enumerate(sorted(files.items())):
            fh: BinaryIO
            if "/" in name or not name:
                raise ValueError(f"cidata file names are flat: {name!r}")
            if isinstance(content, Path):
                fh = content.open("rb")
                handles.append(fh)
                size = content.stat().st_size
            else:
                fh = io.BytesIO(content)
                size = len(content)
            iso.add_fp(fh, size, _iso_name(index), rr_name=name, joliet_path=f"/{name}", file_mode=0o100755)
        tmp = path.with_name(f".{path.name}.fpvm-tmp")
        iso.write(str(tmp))
        tmp.replace(path)
    finally:
        iso.close()
        for fh in handles:
            fh.close()


def read_cidata(path: Path) -> dict[str, bytes]:
    """Every top-level file of a cidata ISO by its Rock Ridge name (used by tests and ``doctor``)."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out: dict[str, bytes] = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dot() or child.is_dotdot() or child.is_dir():
                continue
            name = child.rock_ridge.name().decode()
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
            out[name] = buf.getvalue()
        return out
    finally:
        iso.close()


def volume_id(path: Path) -> str:
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        return bytes(iso.pvd.volume_identifier).decode().strip()
    finally:
        iso.close()
