"""A staged FreeBSD-like root for the guest agent's tests.

Account files follow FreeBSD's base ``etc/master.passwd`` and ``etc/group`` (a subset: root, toor,
daemon, operator, nobody; wheel, operator ...). ``/home`` is the relative link ``usr/home`` as on
FreeBSD, so path resolution through a legitimate in-root symlink is exercised by every test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

MASTER_PASSWD = """\
root::0:0::0:0:Charlie &:/root:/bin/sh
toor:*:0:0::0:0:Bourne-again Superuser:/root:
daemon:*:1:1::0:0:Owner of many system processes:/root:/usr/sbin/nologin
operator:*:2:5::0:0:System &:/:/usr/sbin/nologin
nobody:*:65534:65534::0:0:Unprivileged user:/nonexistent:/usr/sbin/nologin
"""

GROUP = """\
wheel:*:0:root
daemon:*:1:
kmem:*:2:
sys:*:3:
tty:*:4:
operator:*:5:root
staff:*:20:
nogroup:*:65533:
nobody:*:65534:
"""


def passwd_from_master(master: str) -> str:
    out = []
    for line in master.splitlines():
        f = line.split(":")
        out.append(":".join([f[0], "*", f[2], f[3], f[7], f[8], f[9]]))
    return "\n".join(out) + "\n"


def make_root(base: Path) -> Path:
    """Create a minimal FreeBSD-shaped root under ``base`` and return it."""
    root = base / "root"
    for d in ("etc", "root", "usr/home", "usr/local/bin", "usr/local/etc", "bin", "var/db", "var/log", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "root", 0o700)
    (root / "home").symlink_to("usr/home")
    (root / "etc/master.passwd").write_text(MASTER_PASSWD)
    os.chmod(root / "etc/master.passwd", 0o600)
    (root / "etc/passwd").write_text(passwd_from_master(MASTER_PASSWD))
    (root / "etc/group").write_text(GROUP)
    (root / "bin/sh").write_bytes(b"")
    (root / "usr/local/bin/podman").write_bytes(b"")
    zone = root / "usr/share/zoneinfo/Europe"
    zone.mkdir(parents=True)
    (zone / "London").write_bytes(b"TZif2")
    return root


def snapshot(root: Path, exclude: tuple[str, ...] = ("var/db/fpvm", "var/log/fpvm.log")) -> dict[str, tuple]:
    """Every node under root: (type, mode, uid, gid, contents or link target, mtime_ns)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if any(rel == e or rel.startswith(e + "/") for e in exclude):
                continue
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", st.st_uid, st.st_gid, os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", oct(st.st_mode & 0o7777), st.st_uid, st.st_gid, st.st_mtime_ns)
            else:
                out[rel] = (
                    "file",
                    oct(st.st_mode & 0o7777),
                    st.st_uid,
                    st.st_gid,
                    p.read_bytes(),
                    st.st_mtime_ns,
                )
    return out


def run_fpvm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fpvm", *args], capture_output=True, text=True, cwd=REPO, check=False
    )


def recorded(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [json.loads(line)["argv"] for line in path.read_text().splitlines() if line.strip()]


def write_config(path: Path, config: dict) -> Path:
    path.write_text(json.dumps(config))
    return path


def minimal(**sections: object) -> dict:
    """A valid spec 3.2.0 config with the given top-level sections."""
    cfg: dict = {"ignition": {"version": "3.2.0"}}
    cfg.update(sections)
    return cfg
