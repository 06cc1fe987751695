"""A staged FreeBSD-like root for the guest agent's tests.

Account files come from tests/fpvm_support.py (FreeBSD's base ``etc/master.passwd`` and ``etc/group``).
``/home`` is the relative link ``usr/home`` as on FreeBSD, so path resolution through a legitimate
in-root symlink is exercised by every test.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

from fpvm_runner import run_fpvm
from fpvm_support import write_accounts

REPO = Path(__file__).resolve().parents[2]


def make_root(base: Path) -> Path:
    """Create a minimal FreeBSD-shaped root under ``base`` and return it."""
    root = base / "root"
    for d in ("etc", "root", "usr/home", "usr/local/bin", "usr/local/etc", "bin", "var/db", "var/log", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "root", 0o700)
    (root / "home").symlink_to("usr/home")
    write_accounts(root)
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


def provision(root: Path, config: Path, record: Path) -> subprocess.CompletedProcess[str]:
    """``fpvm guest provision`` on a staged root, recording commands instead of running them."""
    args = ("--root", str(root), "--config", str(config), "--record", str(record), "--no-ready")
    return run_fpvm("guest", "provision", *args)


def provision_config(config_path: Path, base: Path) -> dict[str, Any]:
    """A fresh staged root under ``base`` provisioned once from ``config_path`` (the fixtures' first boot)."""
    root = make_root(base)
    rec = base / "record.jsonl"
    first = provision(root, config_path, rec)
    cfg = json.loads(config_path.read_bytes())
    return {"root": root, "rec": rec, "result": first, "cfg": cfg, "config_path": config_path, "base": base}


def assert_second_run_changes_nothing(provisioned: dict[str, Any]) -> None:
    """Provisioning again from the same config leaves the tree as it was and runs no account command."""
    root: Path = provisioned["root"]
    rec: Path = provisioned["rec"]
    before = snapshot(root)
    n = len(recorded(rec))
    again = provision(root, provisioned["config_path"], rec)
    assert again.returncode == 0, again.stdout + again.stderr
    changed = [line for line in again.stdout.splitlines() if line.startswith("  changed: ")]
    # Only runtime steps may repeat: loading the 9p driver for host folders (kldload -n is a no-op
    # when loaded) on configs with mount units. No file, no account.
    assert [c for c in changed if "kldload -n virtio_p9fs" not in c] == []
    assert snapshot(root) == before
    new = recorded(rec)[n:]
    assert [c for c in new if c[0] == "pw"] == []
    assert all(c[0] in ("/sbin/kldload", "/sbin/sysctl", "/sbin/mount") for c in new), new


def assert_links_applied(root: Path, cfg: dict) -> None:
    """The docker alias always; /etc/localtime (and var/db/zoneinfo) exactly when the config links it."""
    links = {link["path"]: link["target"] for link in cfg["storage"].get("links", [])}
    assert os.readlink(root / "usr/local/bin/docker") == "/usr/local/bin/podman"
    if "/etc/localtime" in links:
        assert os.readlink(root / "etc/localtime") == links["/etc/localtime"]
        zone = links["/etc/localtime"].split("zoneinfo/", 1)[1]
        assert (root / "var/db/zoneinfo").read_text() == zone + "\n"
    else:
        assert not (root / "etc/localtime").is_symlink() and not (root / "etc/localtime").exists()


def assert_sudoers_valid(root: Path, names: list[str]) -> str:
    """The agent's sudoers file: a NOPASSWD rule per podman user, mode 0440, accepted by the real visudo."""
    path = root / "usr/local/etc/sudoers.d/fpvm-podman"
    text = path.read_text()
    for name in names:
        assert f"{name} ALL=(ALL:ALL) NOPASSWD: ALL\n" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o440
    visudo = shutil.which("visudo") or "/usr/sbin/visudo"
    res = subprocess.run([visudo, "-cf", str(path)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return text


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
