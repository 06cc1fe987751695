"""Start and stop real QEMUs with fw_cfg entries for the fw_cfg tests (imported by the test modules)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Every ``name=`` below must stay under 56 bytes (fw_cfg's name field, NUL included).
FIXTURE_PREFIX = "opt/fpvm/fixture/"


@dataclass
class Qemu:
    """A running QEMU and what it was given: entry name -> the exact bytes of the file passed."""

    process: subprocess.Popen[bytes]
    qmp: str
    entries: dict[str, bytes] = field(default_factory=dict)


def start_qemu(binary: str, machine: str, workdir: Path, files: dict[str, Path], accel: str = "tcg") -> Qemu:
    """Start ``binary`` paused, with a QMP socket and one ``-fw_cfg name=…,file=…`` per entry."""
    found = shutil.which(binary)
    if found is None:
        pytest.fail(f"{binary} is not installed; the fw_cfg tests need the real QEMU")
    sock = workdir / "qmp.sock"
    argv = [
        found,
        "-machine",
        machine,
        "-accel",
        accel,
        "-S",
        "-nodefaults",
        "-display",
        "none",
        "-qmp",
        f"unix:{sock},server=on,wait=off",
    ]
    for name, path in files.items():
        argv += ["-fw_cfg", f"name={name},file={path}"]
    log = open(workdir / "qemu.log", "wb")  # noqa: SIM115 -- lives as long as the process
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"QEMU exited: {(workdir / 'qemu.log').read_text(errors='replace')}")
        if sock.exists():
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(sock))
                    probe.makefile("rb").readline()  # the greeting; closing frees the monitor again
                break
            except OSError:
                pass
        if time.monotonic() > deadline:
            stop_qemu(process)
            pytest.fail("QEMU did not open its QMP socket within 30 s")
        time.sleep(0.05)
    return Qemu(
        process=process, qmp=str(sock), entries={name: path.read_bytes() for name, path in files.items()}
    )


def stop_qemu(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(timeout=30)


def hmp(qmp: str, command: str) -> str:
    """One HMP command through a fresh QMP connection (for checks that bypass fpvm's own client)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(qmp)
        stream = sock.makefile("rwb")
        stream.readline()
        for request in (
            {"execute": "qmp_capabilities"},
            {"execute": "human-monitor-command", "arguments": {"command-line": command}},
        ):
            stream.write(json.dumps(request).encode() + b"\n")
            stream.flush()
            while "event" in (answer := json.loads(stream.readline())):
                pass
        result = answer["return"]
        assert isinstance(result, str)
        return result


def ignition_not_in_repo() -> bytes:
    """A config that exists nowhere but in this run: the 'done when' of issue 4."""
    key = os.urandom(32).hex()
    config = {
        "ignition": {"version": "3.2.0"},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [f"ssh-ed25519 AAAA{key} test@fpvm"]}]},
    }
    return json.dumps(config, indent=1).encode()
