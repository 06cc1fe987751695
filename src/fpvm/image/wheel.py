"""The fpvm wheel that goes into the image, and its installation into a staged root.

fpvm is pure Python with no dependencies inside the guest, so a wheel made straight from the running
package is enough: no pip, no network, the same bytes on every host. Installing it in the image is
unpacking it into python3's site-packages (``pkg --rootdir`` cannot run the target's python when the
target arch differs). The builder VM imports fpvm from the wheel file itself (zipimport).
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import fpvm
from fpvm.fsutil import atomic_write
from fpvm.image.plan import BuildError

_ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # fixed: the same sources give the same wheel


def wheel_name() -> str:
    return f"fpvm-{fpvm.__version__}-py3-none-any.whl"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest},{len(data)}"


def build_wheel(dest_dir: Path, package_dir: Path | None = None) -> Path:
    """Write ``fpvm-<version>-py3-none-any.whl`` made from ``package_dir`` (default: this fpvm)."""
    source = package_dir or Path(fpvm.__file__).resolve().parent
    files: dict[str, bytes] = {}
    for path in sorted(source.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files[f"fpvm/{path.relative_to(source).as_posix()}"] = path.read_bytes()
    info = f"fpvm-{fpvm.__version__}.dist-info"
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: fpvm\nVersion: {fpvm.__version__}\nRequires-Python: >=3.11\n"
    ).encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: fpvm\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/entry_points.txt"] = b"[console_scripts]\nfpvm = fpvm.cli:main\n"
    record = "".join(f"{name},{_record_hash(data)}\n" for name, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            entry = zipfile.ZipInfo(name, _ZIP_TIME)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, data)
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / wheel_name()
    atomic_write(out, buffer.getvalue())
    return out


def install_wheel(wheel: Path, root: Path) -> Path:
    """Unpack ``wheel`` into the python3 site-packages of the staged ``root``; returns that directory."""
    candidates = sorted(root.glob("usr/local/lib/python3.*/site-packages"))
    if not candidates:
        raise BuildError(f"no python3 site-packages under {root}/usr/local/lib: is python3 installed?")
    site = candidates[-1]
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.infolist():
                name = member.filename
                if member.is_dir():
                    continue
                if name.startswith("/") or ".." in Path(name).parts:
                    raise BuildError(f"{wheel}: unsafe member {name!r}")
                dest = site / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(dest, zf.read(member))
    except (OSError, zipfile.BadZipFile) as exc:
        raise BuildError(f"cannot install {wheel}: {exc}") from None
    return site
