"""``fpvm podman-machine setup|teardown``: fpvm's qemu/virtiofsd helpers for podman >= 5.2 on Linux.

podman looks up ``qemu-system-<arch>`` and ``virtiofsd`` in ``CONTAINERS_HELPER_BINARY_DIR``, then in
containers.conf's ``[engine] helper_binaries_dir`` (in order), then on PATH. ``setup`` writes the helpers
(``fpvm.machine.podman_helper_main``, copied, behind small sh launchers) into one folder and a user
drop-in, ``~/.config/containers/containers.conf.d/99-fpvm-helpers.conf``, whose ``helper_binaries_dir``
is that folder followed by the list in force before (containers.conf has no "prepend"; a drop-in's list
replaces the earlier one). ``teardown`` removes exactly the folder's files and the drop-in.

For a FreeBSD machine the helpers turn podman's virtio-fs folders into virtio-9p devices; every other
machine gets the real binaries with its command line unchanged (see podman_helper_main).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import tomllib
from pathlib import Path
from typing import Any

from fpvm.fsutil import atomic_write
from fpvm.machine.errors import MachineError
from fpvm.machine.state import data_home, podman_config_home

MARKER = "# Written by `fpvm podman-machine setup`"
DROPIN_NAME = "99-fpvm-helpers.conf"
SCRIPT_NAME = "fpvm_podman_helper.py"
HELPERS_JSON = "helpers.json"
LOG_NAME = "helpers.log"
USR_CONF = Path("/usr/share/containers/containers.conf")
ETC_DIR = Path("/etc/containers")
# c/common's compiled-in list on Linux (pkg/config/config_linux.go)
PODMAN_DEFAULT_DIRS = [
    "/usr/local/libexec/podman",
    "/usr/local/lib/podman",
    "/usr/libexec/podman",
    "/usr/lib/podman",
]


def qemu_name(machine: str | None = None) -> str:
    """podman's QemuCommand: ``qemu-system-`` + the host's architecture."""
    m = (machine or platform.machine()).lower()
    return "qemu-system-" + {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def helper_dir() -> Path:
    return data_home() / "fpvm" / "podman-helpers"


def user_conf_dir() -> Path:
    return podman_config_home() / "containers"


def dropin_path() -> Path:
    return user_conf_dir() / "containers.conf.d" / DROPIN_NAME


def conf_files(uid: int | None = None) -> list[Path]:
    """The containers.conf files podman reads, in order (c/common ``systemConfigs``)."""
    env = os.environ.get("CONTAINERS_CONF")
    if env:
        return [Path(env)]
    uid = os.getuid() if uid is None else uid

    def dropins(d: Path) -> list[Path]:
        return sorted(p for p in d.glob("*.conf") if p.is_file()) if d.is_dir() else []

    files = [USR_CONF, ETC_DIR / "containers.conf"]
    files += dropins(ETC_DIR / "containers.conf.d")
    if uid > 0:
        rootless = ETC_DIR / "containers.rootless.conf"
        files += [rootless, *dropins(Path(f"{rootless}.d")), *dropins(Path(f"{rootless}.d") / str(uid))]
    home = user_conf_dir() / "containers.conf"
    files += [home, *dropins(Path(f"{home}.d"))]
    return files


def helper_dirs_in_force(skip: Path | None = None) -> tuple[list[str], Path | None]:
    """(helper_binaries_dir as podman computes it, the file that set it last), ignoring ``skip``."""
    dirs = list(PODMAN_DEFAULT_DIRS)
    source: Path | None = None
    for path in conf_files():
        if skip is not None and path == skip:
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise MachineError(f"cannot read {path}: {exc}") from None
        value = (
            data.get("engine", {}).get("helper_binaries_dir")
            if isinstance(data.get("engine"), dict)
            else None
        )
        if not isinstance(value, list):
            continue
        strings = [str(v) for v in value if isinstance(v, str)]
        append = any(isinstance(v, dict) and v.get("append") is True for v in value)
        dirs = dirs + strings if append else strings
        source = path
    return dirs, source


def toml_string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a TOML basic string


def dropin_text(folder: Path, previous: list[str]) -> str:
    items = ", ".join(toml_string(d) for d in [str(folder), *previous])
    return (
        f"{MARKER}; `fpvm podman-machine teardown` removes it.\n"
        "# fpvm's qemu/virtiofsd helpers first: for FreeBSD machines they turn podman 5.2+'s virtio-fs\n"
        "# folders into 9p (FreeBSD has no virtio-fs); other machines get the real binaries, unchanged.\n"
        "# The rest of the list is what was in force when setup ran.\n"
        "[engine]\n"
        f"helper_binaries_dir = [{items}]\n"
    )


def interpreter() -> str:
    """A python3 that outlives virtualenvs: the system's, else the base interpreter of this one."""
    for cand in ("/usr/bin/python3", os.path.realpath(sys.executable)):
        if os.access(cand, os.X_OK):
            return cand
    raise MachineError("no python3 interpreter found for the helpers")


def launcher(role: str, folder: Path, python: str) -> str:
    """The script podman runs as ``role``: python3 -I (no PYTHON* variables), no sh in between.

    A sh front would add PWD to the environment the real binary gets; this way the helper hands on
    exactly what podman passed (argv, /proc/self/environ, folder).
    """
    if any(c.isspace() for c in python) or len(python) > 120:
        raise MachineError(f"the python3 path {python!r} cannot be used in a #! line")
    return (
        f"#!{python} -IB\n"
        f"{MARKER} ({role}); `fpvm podman-machine teardown` removes it.\n"
        "import sys\n"
        f"sys.path.insert(0, {str(folder)!r})\n"
        "import fpvm_podman_helper\n"
        f"sys.exit(fpvm_podman_helper.main({role!r}, sys.argv))\n"
    )


def helper_files(folder: Path, previous: list[str], python: str) -> dict[str, tuple[bytes, int]]:
    source = Path(__file__).with_name("podman_helper_main.py").read_bytes()
    files: dict[str, tuple[bytes, int]] = {SCRIPT_NAME: (source, 0o644)}
    for role in (qemu_name(), "virtiofsd"):
        files[role] = (launcher(role, folder, python).encode(), 0o755)
    files[HELPERS_JSON] = ((json.dumps({"search_dirs": previous}, indent=1) + "\n").encode(), 0o644)
    return files


def setup(folder: Path | None = None, out: Any = None) -> int:
    out = out or sys.stdout
    if not sys.platform.startswith("linux"):
        raise MachineError(
            "the helpers are for podman's qemu provider on Linux (podman 5 on macOS uses applehv/libkrun, "
            "whose virtio-fs and vsock FreeBSD lacks): use `fpvm machine` there"
        )
    folder = folder or helper_dir()
    drop = dropin_path()
    previous, _ = helper_dirs_in_force(skip=drop)
    previous = [d for d in previous if Path(d) != folder]
    python = interpreter()
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data, mode) in helper_files(folder, previous, python).items():
        atomic_write(folder / name, data, mode=mode)
    drop.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(drop, dropin_text(folder, previous).encode(), mode=0o644)
    print(f"Installed fpvm's {qemu_name()} and virtiofsd helpers in {folder}", file=out)
    print(f"podman finds them first through {drop}", file=out)
    if os.environ.get("CONTAINERS_HELPER_BINARY_DIR") or os.environ.get("CONTAINERS_CONF"):
        print("note: CONTAINERS_HELPER_BINARY_DIR or CONTAINERS_CONF is set and takes precedence", file=out)
    return 0


def teardown(folder: Path | None = None, out: Any = None) -> int:
    out = out or sys.stdout
    folder = folder or helper_dir()
    removed: list[str] = []
    drop = dropin_path()
    if drop.is_file() and drop.read_text(encoding="utf-8", errors="replace").startswith(MARKER):
        drop.unlink()
        removed.append(str(drop))
    names = [SCRIPT_NAME, HELPERS_JSON, LOG_NAME, LOG_NAME + ".old", qemu_name(), "virtiofsd"]
    for name in names:
        p = folder / name
        if p.is_file() and not p.is_symlink():
            p.unlink()
            removed.append(str(p))
    cache = folder / "__pycache__"
    if cache.is_dir():
        for p in cache.iterdir():
            p.unlink()
        cache.rmdir()
    for d in (folder, folder.parent):  # .../fpvm/podman-helpers, then .../fpvm when empty
        if d.is_dir() and not any(d.iterdir()) and d.name in ("podman-helpers", "fpvm"):
            d.rmdir()
    print(
        "Removed: " + (", ".join(removed) if removed else "nothing (fpvm's helpers were not installed)"),
        file=out,
    )
    return 0


@dataclasses.dataclass
class HelperStatus:
    ok: bool
    detail: str
    fix: str = ""


def status(folder: Path | None = None) -> HelperStatus:
    """Are the helpers installed, first in podman's lookup, and is the real QEMU behind them?"""
    folder = folder or helper_dir()
    fix = "run: fpvm podman-machine setup"
    missing = [n for n in (SCRIPT_NAME, qemu_name(), "virtiofsd") if not (folder / n).is_file()]
    if missing:
        return HelperStatus(
            False, f"fpvm's helpers are not installed ({', '.join(missing)} missing in {folder})", fix
        )
    env = os.environ.get("CONTAINERS_HELPER_BINARY_DIR")
    if env and Path(env) != folder:
        return HelperStatus(
            False,
            f"CONTAINERS_HELPER_BINARY_DIR={env} comes before fpvm's helpers",
            "unset it, or set it to " + str(folder),
        )
    try:
        dirs, source = helper_dirs_in_force()
    except MachineError as exc:
        return HelperStatus(False, str(exc), "fix the file, then: fpvm podman-machine setup")
    if not dirs or Path(dirs[0]) != folder:
        where = f" (set last in {source})" if source else ""
        return HelperStatus(False, f"podman's helper_binaries_dir does not start with {folder}{where}", fix)
    first = (folder / qemu_name()).read_text(encoding="utf-8", errors="replace").partition("\n")[0]
    python = first[2:].split()[0] if first.startswith("#!") and first[2:].split() else ""
    if not os.access(python, os.X_OK):
        return HelperStatus(False, f"the helpers' python3 {python} is gone", fix)
    from fpvm.machine import podman_helper_main as hm

    real = hm.find_real(qemu_name(), str(folder))
    virtiofsd = hm.find_real("virtiofsd", str(folder))
    if real is None:
        return HelperStatus(False, f"no real {qemu_name()} behind fpvm's helper", "install QEMU")
    note = (
        f"; real virtiofsd: {virtiofsd}"
        if virtiofsd
        else "; no real virtiofsd (only FreeBSD machines can share folders)"
    )
    return HelperStatus(True, f"fpvm's helpers in {folder} come first (real QEMU: {real}{note})")
