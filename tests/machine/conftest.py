"""Fixtures for the host launcher tests: an isolated home, a stand-in disk image, the stand-in QEMU, sshd."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fpvm.machine import cli

HERE = Path(__file__).resolve().parent
FAKE_QEMU = HERE / "fake_qemu.py"


def fpvm(*argv: str) -> int:
    """Run ``fpvm ARGV`` through this area's own parser (the same register() the fpvm command uses)."""
    parser = argparse.ArgumentParser(prog="fpvm")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def make_disk(path: Path, size: int = 4 << 20) -> Path:
    """A stand-in raw disk: a protective MBR signature and a GPT header, the rest zeros."""
    head = bytearray(1024)
    head[446 + 4] = 0xEE  # protective MBR partition type
    head[510:512] = b"\x55\xaa"
    head[512:520] = b"EFI PART"
    with path.open("wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Everything fpvm and podman write goes under tmp_path; sockets under a short /tmp dir."""
    home = tmp_path / "home"
    home.mkdir()
    run = Path(tempfile.mkdtemp(prefix="fpvmt", dir="/tmp"))
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
    shutil.rmtree(run, ignore_errors=True)


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    return make_disk(tmp_path / "freebsd.raw")


@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    wrapper = tmp_path / "qemu-system-fake"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_QEMU}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("FPVM_QEMU", str(wrapper))
    return wrapper


@pytest.fixture
def sshd_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
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
def reap() -> Iterator[list[int]]:
    """Pids a test started indirectly; killed at the end whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
