"""Fixtures of the host launcher tests (this folder's conftest: pytest loads it for every test here).

Fixture names start with ``machine_`` (or say what they are) to stay clear of other areas'.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from machine_support import FAKE_QEMU, make_disk


@pytest.fixture
def machine_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Everything fpvm and podman write goes under one short /tmp dir (unix socket paths are short)."""
    base = Path(tempfile.mkdtemp(prefix="fpvmt", dir="/tmp"))
    home = base / "h"
    home.mkdir()
    run = base / "r"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.setenv("TZ", "Europe/Paris")
    # podman running as root writes /etc/containers/containers.conf unless told otherwise.
    conf = tmp_path / "containers.conf"
    conf.touch()
    monkeypatch.setenv("CONTAINERS_CONF", str(conf))
    monkeypatch.delenv("FPVM_QEMU", raising=False)
    monkeypatch.delenv("FPVM_FIRMWARE", raising=False)
    yield tmp_path
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def machine_disk(tmp_path: Path) -> Path:
    return make_disk(tmp_path / "freebsd.raw")


@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    wrapper = tmp_path / "qemu-system-fake"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_QEMU}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("FPVM_QEMU", str(wrapper))
    return wrapper


@pytest.fixture
def machine_sshd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An sshd config the stand-in QEMU uses on the forwarded port; keys go in ``authorized_keys``."""
    d = tmp_path / "sshd"
    d.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", str(d / "host_key")], check=True)
    (d / "authorized_keys").touch()
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # OpenSSH's privilege separation directory
    cfg = d / "sshd_config"
    cfg.write_text(
        f"ListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "StrictModes no\nUsePAM no\nPidFile none\n"
    )
    monkeypatch.setenv("FAKE_QEMU_SSHD_CONFIG", str(cfg))
    return d


@pytest.fixture
def vm_reaper() -> Iterator[list[int]]:
    """VM pids a test started indirectly; their process groups (with the stand-in's sshd) die at the end."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(OSError):
            os.killpg(pid, 9)
