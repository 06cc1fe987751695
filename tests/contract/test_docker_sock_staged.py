"""docker.sock on a staged guest root: podman 5's recorded rootful lines through the real shims.

The root is what a machine has after boot: the image overlay (``fpvm image overlay``'s entries) and
``fpvm guest provision`` with the machine.ign podman 5.8.2 wrote. podman's ssh lines (from the
captures' ``rootful.json``) run through the contract test's guest shell stand-in (``forced_command.py``,
whose ``bash -c 'echo … > FILE'`` fails like bash when FILE's folder is missing) and the real
linux-compat launcher scripts, whose ``fpvm`` records FreeBSD commands instead of running them.
The same lines through the real sshd are in test_podman_machine.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fpvm.guest.compat import launchers
from fpvm.image import overlay
from fpvm_support import FIXTURES

REPO = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).resolve().parent / "standins" / "forced_command.py"
CAPTURES = {v: FIXTURES / f"podman-{v}-qemu-capture" for v in ("5.8.2", "5.1.2")}
BASE_ACCOUNTS = {
    "etc/master.passwd": "root:*:0:0::0:0:Charlie &:/root:/bin/sh\n",
    "etc/passwd": "root:*:0:0:Charlie &:/root:/bin/sh\n",
    "etc/group": "wheel:*:0:root\noperator:*:5:root\n",
}


def _guest(tmp_path: Path, with_overlay: bool = True) -> tuple[Path, Path]:
    """(staged root, stand-in config): FreeBSD accounts, optionally the image overlay."""
    root = tmp_path / "root"
    for rel, text in BASE_ACCOUNTS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "root").mkdir(mode=0o700)
    if with_overlay:
        overlay.write(root, overlay.entries("amd64"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "shims.jsonl"
    fpvm = bindir / "fpvm-record"
    src = REPO / "src"
    fpvm.write_text(
        "#!/bin/sh\na=$1 b=$2; shift 2\n"
        f'PYTHONPATH={src} exec {sys.executable} -m fpvm "$a" "$b" --record {record} --root {root} "$@"\n'
    )
    fpvm.chmod(0o755)
    compat = tmp_path / "linux-compat"
    compat.mkdir()
    for name, text in launchers(fpvm=str(fpvm)).items():
        (compat / name).write_text(text)
        (compat / name).chmod(0o755)
    cfg = tmp_path / "harness.json"
    cfg.write_text(
        json.dumps({"staged": str(root), "launchers": str(compat), "ssh_log": str(tmp_path / "ssh.jsonl")})
    )
    return root, cfg


def _boot(root: Path, ign: Path) -> None:
    """One boot of the agent (records instead of running FreeBSD commands)."""
    args = [
        "--root",
        str(root),
        "--config",
        str(ign),
        "--record",
        str(root.parent / "agent.jsonl"),
        "--no-ready",
    ]
    res = subprocess.run(
        [sys.executable, "-m", "fpvm", "guest", "provision", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def _ssh(cfg: Path, line: str) -> subprocess.CompletedProcess[str]:
    env = {"SSH_ORIGINAL_COMMAND": line, "PYTHONPATH": str(REPO / "src"), "PATH": os.environ["PATH"]}
    return subprocess.run(
        [sys.executable, str(STANDIN), str(cfg)], env=env, capture_output=True, text=True, check=False
    )


def _rootful_lines(version: str) -> list[str]:
    recorded = json.loads((CAPTURES[version] / "rootful.json").read_text())["ssh_commands"]
    lines = [c["command"] for c in recorded if "tmpfiles" in c["command"]]
    assert len(lines) == 2 and lines[1] == "sudo systemd-tmpfiles --create --prefix=/run/docker.sock"
    return lines


@pytest.mark.parametrize("version", sorted(CAPTURES))
def test_rootless_boot_then_rootful_start_then_reboot(tmp_path: Path, version: str) -> None:
    root, cfg = _guest(tmp_path)
    assert (root / "etc/tmpfiles.d").is_dir()  # the image has the folder podman writes into
    ign = CAPTURES[version] / "machine.ign"
    _boot(root, ign)
    sock = root / "var/run/docker.sock"
    # rootless (podman's Ignition): the boot applied the config's own tmpfiles line, as FCOS does
    assert os.readlink(sock) == "/run/user/1003/podman/podman.sock"
    # `podman machine set --rootful`, then start: podman's two recorded lines, as the login user
    write, create = _rootful_lines(version)
    done = _ssh(cfg, write)
    assert done.returncode == 0, done.stderr
    assert (root / "etc/tmpfiles.d/podman-docker.conf").read_text().split() == [
        "L+", "/run/docker.sock", "-", "-", "-", "-", "/run/podman/podman.sock"
    ]  # fmt: skip
    done = _ssh(cfg, create)
    assert done.returncode == 0, done.stderr
    assert os.readlink(sock) == "/run/podman/podman.sock"
    # the next boot (cleanvar empties /var/run) brings the rootful link back: podman's file is kept
    sock.unlink()
    _boot(root, ign)
    assert os.readlink(sock) == "/run/podman/podman.sock"
    # inside the guest /run/podman/podman.sock is root's API socket: the image links /run to var/run
    assert os.readlink(root / "run") == "var/run"


def test_without_the_image_folder_the_write_fails_like_bash(tmp_path: Path) -> None:
    """The stand-in is faithful: no /etc/tmpfiles.d (an old image, no Ignition file) -> bash's error."""
    root, cfg = _guest(tmp_path, with_overlay=False)
    write, _ = _rootful_lines("5.8.2")
    done = _ssh(cfg, write)
    assert done.returncode == 1
    assert "/etc/tmpfiles.d/podman-docker.conf: No such file or directory" in done.stderr
    assert not (root / "etc/tmpfiles.d").exists()


def test_real_bash_agrees_with_the_stand_in(tmp_path: Path) -> None:
    """bash itself refuses `echo … > DIR/missing/file` and writes into an existing folder."""
    bash = shutil.which("bash")
    assert bash is not None
    target = tmp_path / "etc/tmpfiles.d/podman-docker.conf"
    res = subprocess.run([bash, "-c", f"echo x > {target}"], capture_output=True, text=True, check=False)
    assert res.returncode == 1 and "No such file or directory" in res.stderr
    target.parent.mkdir(parents=True)
    res = subprocess.run([bash, "-c", f"echo x > {target}"], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and target.read_text() == "x\n"
