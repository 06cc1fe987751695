"""`fpvm podman-machine console|doctor` on podman 4.x machine files (the fixtures podman itself wrote).

The console edit is checked byte for byte against the files podman 4.3.1 and 4.9.5 produce; the
console and doctor are then run against the stand-in QEMU started with the edited ``CmdLine``.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from machine_support import FAKE_QEMU

from fpvm.machine import lifecycle, podman_machine
from fpvm.machine.podman_machine import BACKUP_SUFFIX, PodmanMachine
from fpvm_runner import fpvm_main
from fpvm_support import PODMAN_CAPTURE, PODMAN_IGNITION

# fixture file, machine name, home and runtime dir as written in the fixture
FIXTURES = {
    "4.3.1": (PODMAN_CAPTURE / "machine.json", "fbsd", "/home/user", "/tmp/podman-run-1001"),
    "4.9.5": (
        PODMAN_IGNITION / "v4.9.5-qemu-machine.json",
        "podman-machine-default",
        "/home/u",
        "/run/user/1000",
    ),
}


def install(version: str, machine_env: Path, **overrides: object) -> tuple[Path, str]:
    """Put a fixture where podman keeps it, its paths moved under the test's home and runtime dir."""
    src, name, home, run = FIXTURES[version]
    text = src.read_text().replace(home, os.environ["HOME"]).replace(run, os.environ["XDG_RUNTIME_DIR"])
    if overrides:
        data = json.loads(text)
        data.update(overrides)
        text = podman_machine.dumps_like_podman(data).decode()
    dest = podman_machine.config_dir() / f"{name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    # podman made the image's folder at init; QEMU creates the console log in it.
    Path(json.loads(text)["ImagePath"]["Path"]).parent.mkdir(parents=True, exist_ok=True)
    Path(os.environ["XDG_RUNTIME_DIR"], "podman").mkdir(exist_ok=True)
    return dest, name


@pytest.mark.parametrize("version", sorted(FIXTURES))
def test_console_edit_is_minimal_backed_up_and_idempotent(
    machine_env: Path, version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path, name = install(version, machine_env)
    original = path.read_bytes()
    assert fpvm_main("podman-machine", "console", name, "--no-attach").status == 0
    assert "Added a serial console" in capsys.readouterr().err
    assert Path(f"{path}{BACKUP_SUFFIX}").read_bytes() == original
    before, after = json.loads(original), json.loads(path.read_bytes())
    sock = Path(os.environ["XDG_RUNTIME_DIR"]) / "podman" / f"{name}_console.sock"
    added = after["CmdLine"][len(before["CmdLine"]) :]
    assert after["CmdLine"][: len(before["CmdLine"])] == before["CmdLine"]
    assert added[0] == "-chardev" and added[1].startswith(
        f"socket,id=fpvmconsole,path={sock},server=on,wait=off,"
    )
    assert added[2:] == ["-serial", "chardev:fpvmconsole"]
    assert {k: v for k, v in after.items() if k != "CmdLine"} == {
        k: v for k, v in before.items() if k != "CmdLine"
    }
    # Written the way podman writes it: the file is the original with lines added at CmdLine's end.
    last_old = f'  "{before["CmdLine"][-1]}"\n ],'.encode()
    assert original.count(last_old) == 1
    tail = b"".join(f',\n  "{a}"'.encode() for a in added)
    assert path.read_bytes() == original.replace(last_old, last_old[: -len(b"\n ],")] + tail + b"\n ],")
    edited = path.read_bytes()
    assert fpvm_main("podman-machine", "console", name, "--no-attach").status == 0
    assert "already has fpvm's console" in capsys.readouterr().err
    assert path.read_bytes() == edited
    assert Path(f"{path}{BACKUP_SUFFIX}").read_bytes() == original


def test_console_refuses_while_the_machine_runs(
    machine_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, name = install("4.3.1", machine_env)
    pm = PodmanMachine.load(name)
    assert pm.pidfile is not None
    pm.pidfile.write_text(f"{os.getpid()}\n")  # a live process
    original = path.read_bytes()
    assert fpvm_main("podman-machine", "console", name).status == 1
    err = capsys.readouterr().err
    assert "is running" in err and f"podman machine stop {name}" in err
    assert path.read_bytes() == original and not Path(f"{path}{BACKUP_SUFFIX}").exists()


def test_console_on_podman5_and_broken_files(machine_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = podman_machine.config_dir()
    d.mkdir(parents=True)
    (d / "five.json").write_bytes((PODMAN_IGNITION / "v5.8.2-qemu-machine.json").read_bytes())
    assert fpvm_main("podman-machine", "console", "five").status == 1
    assert "has no CmdLine: podman 5 builds the QEMU command at every start" in capsys.readouterr().err
    (d / "empty.json").write_bytes(b"")
    assert fpvm_main("podman-machine", "console", "empty").status == 1
    assert "is empty: podman was interrupted" in capsys.readouterr().err
    assert fpvm_main("podman-machine", "doctor", "absent").status == 1
    assert "no podman machine 'absent'" in capsys.readouterr().err


def test_doctor_when_stopped(machine_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, name = install("4.9.5", machine_env)
    assert fpvm_main("podman-machine", "doctor", name).status == 1
    out = capsys.readouterr().out
    assert "[PROBLEM] vm: QEMU is not running" in out
    assert f"what to do: start it: podman machine start {name}" in out
    assert "[skipped] ssh" in out


@pytest.fixture
def ping_server() -> Iterator[list[Path]]:
    """Serve podman's /_ping on unix sockets put in the returned list."""
    servers: list[socket.socket] = []

    def serve(srv: socket.socket) -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nOK")

    class Paths(list[Path]):
        def append(self, path: Path) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            srv = socket.socket(socket.AF_UNIX)
            srv.bind(str(path))
            srv.listen()
            servers.append(srv)
            threading.Thread(target=serve, args=(srv,), daemon=True).start()
            super().append(path)

    holder = Paths()
    yield holder
    for srv in servers:
        srv.close()


@pytest.mark.slow
def test_console_and_doctor_against_a_running_machine(
    machine_env: Path,
    machine_sshd: Path,
    ping_server: list[Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = lifecycle.free_port()
    key = machine_env / "id_podman"
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", str(key)], check=True)
    (machine_sshd / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    _, name = install(
        "4.3.1", machine_env, Port=port, IdentityPath=str(key), RemoteUsername=getpass.getuser()
    )
    assert fpvm_main("podman-machine", "console", name, "--no-attach").status == 0
    pm = PodmanMachine.load(name)

    # podman starts CmdLine verbatim; the stand-in QEMU plays it (gvproxy's ssh forward via the environment).
    monkeypatch.setenv("FAKE_QEMU_SSH_PORT", str(port))
    proc = subprocess.Popen([sys.executable, str(FAKE_QEMU), *pm.cmdline[1:]], start_new_session=True)
    try:
        assert pm.qmp is not None
        end = time.monotonic() + 20
        while not (pm.running() and lifecycle.port_free(port) is False):
            assert time.monotonic() < end, "stand-in did not come up"
            time.sleep(0.05)
        time.sleep(0.3)

        # console attaches while it runs (no edit needed any more).
        r, w = os.pipe()
        os.write(w, b"\n")
        os.close(w)
        sink = io.BytesIO()
        with os.fdopen(r, "rb") as src, monkeypatch.context() as m:
            fake_in, fake_out = io.TextIOWrapper(src), io.TextIOWrapper(sink)
            m.setattr(sys, "stdin", fake_in)
            m.setattr(sys, "stdout", fake_out)
            assert fpvm_main("podman-machine", "console", name).status == 0
            fake_in.detach()
            fake_out.detach()
        assert b"login: " in sink.getvalue()
        _, log = pm.console_paths()
        assert "FreeBSD/amd64 (fake) starting..." in log.read_text()

        # doctor: VM, ready socket, ssh and login are fine; the guest has no API socket (this is no guest).
        ping_server.append(pm.host_api_socket)
        capsys.readouterr()
        assert fpvm_main("podman-machine", "doctor", name).status == 1
        out = capsys.readouterr().out
        for check in ("vm", "ready", "ssh", "login"):
            assert f"[ok] {check}:" in out, out
        assert f"[PROBLEM] api: no API socket at /run/user/{pm.uid}/podman/podman.sock in the guest" in out
        assert "what to do: in the guest: service podman_service status" in out
        assert "/_ping" not in out.split("[PROBLEM] api:")[1].split("what to do")[0]  # host side answered
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(10)


def test_doctor_sees_a_forward_without_sshd(
    machine_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """gvproxy accepts on the port even when the guest's sshd is down: the banner tells them apart."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    _, name = install("4.3.1", machine_env, Port=silent.getsockname()[1])
    pm = PodmanMachine.load(name)
    assert pm.qmp is not None
    qmp = socket.socket(socket.AF_UNIX)
    qmp.bind(str(pm.qmp))
    qmp.listen()
    monkeypatch.setattr(podman_machine, "BANNER_TIMEOUT", 0.3)
    try:
        assert fpvm_main("podman-machine", "doctor", name).status == 1
    finally:
        silent.close()
        qmp.close()
    out = capsys.readouterr().out
    assert "[ok] vm: QEMU is running" in out
    assert "[PROBLEM] ready: QEMU does not listen on the ready socket" in out
    assert "accepts connections but no ssh server answers" in out
    assert f"fpvm podman-machine console {name}" in out
