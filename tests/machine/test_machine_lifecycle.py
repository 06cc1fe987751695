"""start / ssh / console / list / inspect / stop / rm against a simulated VM.

The stand-in QEMU (tests/contract/standins/qemu.py) receives fpvm's real argv and serves QMP, the ready
socket and the console like QEMU does; OpenSSH's sshd plays the guest's sshd on the forwarded port; the
real podman 4.3.1 client records the connection (in a temporary containers.conf).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from fpvm.machine import lifecycle, state
from fpvm.machine.errors import MachineError
from fpvm_runner import fpvm_main

pytestmark = pytest.mark.slow


def _connections() -> list[dict[str, object]]:
    out = subprocess.run(
        ["podman", "system", "connection", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout or "[]")  # type: ignore[no-any-return]


def _init(machine_env: Path, machine_disk: Path, name: str = "vm") -> state.Machine:
    share = machine_env / "share"
    share.mkdir(exist_ok=True)
    assert (
        fpvm_main(
            "machine", "init", name, "--image", str(machine_disk), "--arch", "amd64", "-v", f"{share}:/srv"
        ).status
        == 0
    )
    return state.load(name)


def _pid(name: str) -> int:
    pid = state.vm_pid(state.Paths.of(name))
    assert pid is not None
    return pid


def test_full_lifecycle(
    machine_env: Path,
    machine_disk: Path,
    fake_qemu: Path,
    machine_sshd: Path,
    vm_reaper: list[int],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import getpass

    m = _init(machine_env, machine_disk)
    paths = state.Paths.of("vm")
    (machine_sshd / "authorized_keys").write_text(Path(f"{paths.key}.pub").read_text())
    capsys.readouterr()

    assert fpvm_main("machine", "start", "vm", "--timeout", "30").status == 0
    vm_reaper.append(_pid("vm"))
    out = capsys.readouterr()
    assert "Machine vm is ready" in out.out and "podman --connection fpvm-vm" in out.out
    assert "TCG" not in out.err or "kvm" not in out.out  # a warning only when really emulating
    # The real podman client has the connection, as root, to FreeBSD's API socket.
    (conn,) = _connections()
    assert conn["Name"] == "fpvm-vm" and conn["Identity"] == str(paths.key)
    assert str(conn["URI"]).startswith(f"ssh://root@127.0.0.1:{m.ssh_port}/")
    assert str(conn["URI"]).endswith("/podman/podman.sock")

    # A second start is refused while it runs.
    assert fpvm_main("machine", "start", "vm").status == 1
    assert "already running" in capsys.readouterr().err

    # list / inspect see it running.
    assert fpvm_main("machine", "list", "--json").status == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == "vm" and row["state"] == "running"
    assert fpvm_main("machine", "inspect", "vm").status == 0
    (info,) = json.loads(capsys.readouterr().out)
    assert info["connection"]["name"] == "fpvm-vm" and info["pid"] == _pid("vm")

    # ssh through the forwarded port to the (local) sshd, with the machine's key.
    capfd_user = getpass.getuser()
    result = subprocess.run(
        lifecycle.ssh_argv(m, paths, capfd_user, ["echo", "hello-from-guest"]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello-from-guest"
    # The host key was recorded in the machine's own known_hosts (no prompt, no ~/.ssh/known_hosts).
    found = subprocess.run(
        ["ssh-keygen", "-F", f"[127.0.0.1]:{m.ssh_port}", "-f", str(paths.known_hosts)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0 and "ssh-ed25519" in found.stdout
    assert fpvm_main("machine", "ssh", "--user", capfd_user, "vm", "exit", "7").status == 7

    # console: what the console says comes out, what we type goes in (and into the log).
    r, w = os.pipe()
    os.write(w, b"root\n")
    os.close(w)
    sink = io.BytesIO()
    with os.fdopen(r, "rb") as src:
        assert lifecycle.console("vm", stdin=src, stdout=sink) == 0
    assert b"login: " in sink.getvalue() and b"echo:root\n" in sink.getvalue()
    assert "root\n" in paths.console_log.read_text()

    # stop: the guest honours the power button.
    pid = _pid("vm")
    assert fpvm_main("machine", "stop", "vm", "--timeout", "20").status == 0
    assert not state.pid_alive(pid)
    assert [p for p in paths.runtime_files() if p.exists()] == []
    err = capsys.readouterr().err
    assert "stopped" in err and "warning" not in err, err  # the event before the reply was skipped

    # rm removes the machine and its podman connection.
    assert fpvm_main("machine", "rm", "vm").status == 0
    assert not paths.dir.exists()
    assert _connections() == []


def test_start_deadline_shows_console_and_cleans_up(
    machine_env: Path,
    machine_disk: Path,
    fake_qemu: Path,
    vm_reaper: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _init(machine_env, machine_disk)
    monkeypatch.setenv("FAKE_QEMU_READY_AFTER", "never")
    paths = state.Paths.of("vm")
    with pytest.raises(MachineError) as exc:
        lifecycle.start("vm", timeout=1.5)
    text = str(exc.value)
    assert "vm was not ready after 2 s" in text or "vm was not ready after 1 s" in text
    assert "Last console lines" in text and "FreeBSD/amd64 (fake) starting..." in text
    pid = state.read_pid(paths.pidfile)
    assert pid is None or not state.pid_alive(pid)
    assert [p for p in paths.runtime_files() if p.exists()] == []
    assert _connections() == []


def test_stop_quits_when_the_guest_ignores_the_power_button(
    machine_env: Path,
    machine_disk: Path,
    fake_qemu: Path,
    vm_reaper: list[int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _init(machine_env, machine_disk)
    monkeypatch.setenv("FAKE_QEMU_IGNORE_POWERDOWN", "1")
    assert lifecycle.start("vm", timeout=30) == 0
    pid = _pid("vm")
    vm_reaper.append(pid)
    capsys.readouterr()
    assert lifecycle.stop("vm", timeout=0.5) == 0
    err = capsys.readouterr().err
    assert "did not power off within 0 s: quitting QEMU" in err
    # The stand-in sends an event before its powerdown reply: skipped, so no QMP warning besides this one.
    assert err.count("warning") == 1, err
    assert not state.pid_alive(pid)


def test_stale_runtime_files_are_detected_and_cleaned(
    machine_env: Path,
    machine_disk: Path,
    fake_qemu: Path,
    vm_reaper: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _init(machine_env, machine_disk)
    paths = state.Paths.of("vm")
    paths.run.mkdir(parents=True)
    # What a crash or a host reboot leaves: a pid that is not ours (pid 1 is alive but is no VM) and a
    # socket file nobody serves.
    paths.pidfile.write_text("1\n")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(paths.qmp))
    dead.close()
    assert state.vm_pid(paths) is None
    capsys.readouterr()
    assert fpvm_main("machine", "inspect", "vm").status == 0
    assert json.loads(capsys.readouterr().out)[0]["state"] == "stopped"
    assert fpvm_main("machine", "start", "vm", "--timeout", "30").status == 0
    vm_reaper.append(_pid("vm"))
    assert "removed stale" in capsys.readouterr().err
    assert fpvm_main("machine", "rm", "vm", "--force").status == 0
    assert not paths.dir.exists()


def test_start_refuses_busy_port_and_vanished_volume(
    machine_env: Path, machine_disk: Path, fake_qemu: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = _init(machine_env, machine_disk)
    capsys.readouterr()
    with socket.socket() as s:
        s.bind(("127.0.0.1", m.ssh_port))
        s.listen()
        assert fpvm_main("machine", "start", "vm").status == 1
        assert f"port 127.0.0.1:{m.ssh_port} (the ssh forward of vm) is in use" in capsys.readouterr().err
    (machine_env / "share").rmdir()
    assert fpvm_main("machine", "start", "vm").status == 1
    assert "does not exist any more" in capsys.readouterr().err
    assert state.vm_pid(state.Paths.of("vm")) is None


def test_start_reports_qemu_exiting(
    machine_env: Path, machine_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _init(machine_env, machine_disk)
    broken = tmp_path / "qemu-broken"
    broken.write_text("#!/bin/sh\necho 'qemu-system-x86_64: -virtfs: 9p is not supported here' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("FPVM_QEMU", str(broken))
    t0 = time.monotonic()
    with pytest.raises(MachineError, match="9p is not supported here"):
        lifecycle.start("vm", timeout=30)
    assert time.monotonic() - t0 < 25


def test_commands_on_a_stopped_or_unknown_machine(
    machine_env: Path, machine_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _init(machine_env, machine_disk)
    capsys.readouterr()
    assert fpvm_main("machine", "ssh", "vm").status == 1
    assert "not running" in capsys.readouterr().err
    assert fpvm_main("machine", "console", "vm").status == 1
    assert "console.log" in capsys.readouterr().err
    assert fpvm_main("machine", "stop", "vm").status == 0
    assert fpvm_main("machine", "inspect", "nope").status == 1
    assert "no machine named 'nope'" in capsys.readouterr().err
    assert fpvm_main("machine", "list").status == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["vm", "amd64", "stopped"]


def test_init_now_starts_and_default_makes_the_default_connection(
    machine_env: Path,
    machine_disk: Path,
    fake_qemu: Path,
    machine_sshd: Path,
    vm_reaper: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 7: ``init --now`` boots right away; ``--default`` reaches podman as its default connection."""
    argv = ["machine", "init", "nd", "--image", str(machine_disk), "--arch", "amd64", "--now", "--default"]
    assert fpvm_main(*argv).status == 0
    vm_reaper.append(_pid("nd"))
    assert "Machine nd is ready" in capsys.readouterr().out
    (conn,) = _connections()
    assert conn["Name"] == "fpvm-nd" and conn["Default"] is True
    assert fpvm_main("machine", "stop", "nd", "--force").status == 0
    assert fpvm_main("machine", "rm", "nd").status == 0
    assert _connections() == []
