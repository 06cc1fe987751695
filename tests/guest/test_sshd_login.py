"""The authorized_keys the agent writes are accepted by a real OpenSSH sshd with StrictModes.

sshd runs unprivileged-style on 127.0.0.1 with ``AuthorizedKeysFile`` pointing into the staged root
(root's keys: podman gives root the same key as its user), and the client logs in as the current
user with the private key. This checks the file's format, its mode and its directories' modes the
way sshd does before it trusts a key.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from guest_support import make_root, minimal, write_config

from fpvm_runner import run_fpvm

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH = shutil.which("ssh")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def strict_tmp() -> Iterator[Path]:
    """A temporary directory whose parents StrictModes accepts (not under the world-writable /tmp)."""
    base = Path.home() / ".cache" / "fpvm-tests"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = Path(tempfile.mkdtemp(dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_sshd_accepts_the_provisioned_key(strict_tmp: Path) -> None:
    tmp_path = strict_tmp
    assert Path(SSHD).exists() and SSH, "OpenSSH server and client are test peers"
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    hostkey = tmp_path / "hostkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)], check=True)
    pub = (tmp_path / "id_ed25519.pub").read_text().strip()
    root = make_root(tmp_path)
    cfg = minimal(passwd={"users": [{"name": "core", "uid": 501, "sshAuthorizedKeys": [pub]},
                                    {"name": "root", "sshAuthorizedKeys": [pub]}]})  # fmt: skip
    conf_file = write_config(tmp_path / "c.ign", cfg)
    res = run_fpvm("guest", "provision", "--root", str(root), "--config", str(conf_file),
                   "--record", str(tmp_path / "rec"), "--no-ready")  # fmt: skip
    assert res.returncode == 0, res.stderr
    authorized = root / "root/.ssh/authorized_keys"
    port = _free_port()
    conf = tmp_path / "sshd_config"
    conf.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {hostkey}\nPidFile none\nUsePAM no\n"
        f"AuthorizedKeysFile {authorized}\nStrictModes yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
    )
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf)], stderr=subprocess.PIPE)
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
        opts = [
            "BatchMode=yes",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "IdentitiesOnly=yes",
        ]
        argv = [
            SSH,
            "-i",
            str(key),
            "-p",
            str(port),
            *(x for o in opts for x in ("-o", o)),
            f"{user}@127.0.0.1",
            "echo ok",
        ]
        deadline = time.monotonic() + 15
        while True:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
            if out.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if out.returncode != 0:
            server.terminate()
            _, err = server.communicate(timeout=10)
            raise AssertionError(out.stderr + err.decode(errors="replace"))
        assert out.stdout.strip() == "ok"
        # and the mode sshd insists on is what the agent wrote
        assert authorized.stat().st_mode & 0o777 == 0o600
        assert json.loads((root / "var/db/fpvm/state.json").read_text())["config_sha256"]
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=10)
