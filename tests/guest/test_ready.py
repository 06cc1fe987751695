"""Readiness against a real OpenSSH sshd (127.0.0.1, high port), a real unix socket standing in for
podman's API socket, and a FIFO standing in for the virtio-serial port (podman reads one line)."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fpvm.guest import ready
from fpvm.guest.context import Log

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real sshd listening on 127.0.0.1:<port> (-D: no daemon, -e: log to stderr)."""
    if not Path(SSHD).exists():
        pytest.fail("OpenSSH sshd is required for these tests (apt-get install openssh-server)")
    d = tmp_path_factory.mktemp("sshd")
    key = d / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    port = free_port()
    cfg = d / "sshd_config"
    cfg.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile {d / 'sshd.pid'}\n"
        "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
    )
    # Debian's sshd needs its privilege separation directory.
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    errlog = open(d / "sshd.log", "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stderr=errlog)
    try:
        deadline = time.monotonic() + 10
        while not ready.sshd_answers("127.0.0.1", port, timeout=1):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        errlog.close()


class FifoPort:
    """A FIFO read by a thread, like podman reading one line from the ready socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.data = b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with open(self.path, "rb") as fh:
            self.data = fh.read()

    def result(self) -> bytes:
        self.thread.join(timeout=10)
        return self.data


class ApiSocket:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)

    def close(self) -> None:
        self.sock.close()


def test_sshd_probe(sshd: int) -> None:
    assert ready.sshd_answers("127.0.0.1", sshd)
    assert not ready.sshd_answers("127.0.0.1", free_port())  # nothing listens


def test_probe_refuses_a_non_ssh_server() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        assert not ready.sshd_answers("127.0.0.1", srv.getsockname()[1])
    finally:
        t.join(timeout=5)
        srv.close()


def test_ready_written_once_sshd_and_socket_are_up(sshd: int, tmp_path: Path) -> None:
    port = FifoPort(tmp_path / "org.fedoraproject.port.0")
    api = ApiSocket(tmp_path / "podman.sock")
    log = Log()
    try:
        status = ready.signal_ready(
            port=str(port.path), api_socket=str(tmp_path / "podman.sock"), ssh_port=sshd, timeout=20, log=log
        )
    finally:
        api.close()
    assert status == 0
    assert port.result() == b"Ready\n"
    assert log.warnings == 0


def test_waits_for_the_api_socket(sshd: int, tmp_path: Path) -> None:
    """The socket appears only on the third poll: no Ready before it (fake clock, no real waiting)."""
    sock_path = tmp_path / "podman.sock"
    polls: list[bool] = []
    holder: list[ApiSocket] = []

    def sleep(_: float) -> None:
        polls.append(sock_path.exists())
        if len(polls) == 2:
            holder.append(ApiSocket(sock_path))

    ticks = iter(range(1000))
    waited = ready.wait_until_ready(
        ssh_port=sshd, api_socket=str(sock_path), timeout=100, clock=lambda: float(next(ticks)), sleep=sleep
    )
    for s in holder:
        s.close()
    assert waited.ok
    assert polls == [False, False]


def test_deadline_sends_ready_anyway(tmp_path: Path) -> None:
    port = FifoPort(tmp_path / "port")
    log = Log()
    status = ready.signal_ready(
        port=str(port.path),
        api_socket=str(tmp_path / "absent.sock"),
        ssh_port=free_port(),
        timeout=0,
        log=log,
    )
    assert status == 1
    assert port.result() == b"Ready\n"
    assert any("gave up" in line and "sending Ready anyway" in line for line in log.lines)


def test_absent_port_is_logged_and_not_fatal(sshd: int, tmp_path: Path) -> None:
    log = Log()
    status = ready.signal_ready(port=str(tmp_path / "no-such-port"), api_socket=None, ssh_port=sshd, log=log)
    assert status == 0
    assert any("does not exist" in line for line in log.lines)


def test_regular_file_port(sshd: int, tmp_path: Path) -> None:
    f = tmp_path / "port"
    f.write_bytes(b"")
    assert ready.write_ready(str(f)) == "sent"
    assert f.read_bytes() == b"Ready\n"


def test_ready_main_arguments(sshd: int, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    ready.add_arguments(parser)
    root = tmp_path / "root"
    (root / "var/run/podman").mkdir(parents=True)
    (root / "etc/rc.conf.d").mkdir(parents=True)
    (root / "etc/rc.conf.d/podman_service").write_text('podman_service_enable="YES"\n')
    api = ApiSocket(root / "var/run/podman/podman.sock")
    port = FifoPort(tmp_path / "port")
    args = parser.parse_args(
        ["--root", str(root), "--port", str(port.path), "--timeout", "20", "--ssh-port", str(sshd)]
    )
    assert args.api_socket == ready.AUTO and not args.no_api_socket
    try:
        assert ready.ready_main(args) == 0
    finally:
        api.close()
    assert port.result() == b"Ready\n"
    log = (root / "var/log/fpvm.log").read_text()
    assert f"{root}/var/run/podman/podman.sock exists" in log
    assert "wrote Ready to" in log


def test_auto_waits_for_the_socket_only_when_the_service_is_enabled(sshd: int, tmp_path: Path) -> None:
    from fpvm.guest.rootfs import RootFS

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    fs = RootFS(root)
    assert not ready.api_service_enabled(fs)
    assert ready.resolve_api_socket(fs, ready.AUTO) is None
    (root / "etc/rc.conf").write_text('podman_service_enable="YES"\n')
    assert ready.api_service_enabled(fs)
    assert ready.resolve_api_socket(fs, ready.AUTO) == f"{root}/var/run/podman/podman.sock"
    # rc.conf.d is read after rc.conf: it wins, as with load_rc_config.
    (root / "etc/rc.conf.d").mkdir()
    (root / "etc/rc.conf.d/podman_service").write_text("podman_service_enable=NO\n")
    assert not ready.api_service_enabled(fs)
    (root / "etc/rc.conf.d/podman_service").write_text("podman_service_enable=yes\n")
    # Enabled but no socket: the wait gives up at the deadline and says what was missing.
    log = Log()
    status = ready.signal_ready(
        port=str(tmp_path / "file"), root=str(root), ssh_port=sshd, timeout=0, log=log
    )
    assert status == 1
    assert any("podman.sock; sending Ready anyway" in line for line in log.lines)
