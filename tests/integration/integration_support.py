"""Helpers of the cross-area tests: a FreeBSD-shaped base, recorded commands, QEMU's QMP socket.

The integration tests drive each area through its public face (the ``fpvm`` command, run with
tests/fpvm_runner.py, or the constants and functions named in docs/DEVELOPING.md), never through another
area's test helpers, so a change of one area that breaks another shows up here even when each area's own
tests still pass.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from fpvm_support import write_accounts

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


def make_disk(path: Path, size: int = 4 << 20) -> Path:
    """A stand-in raw disk that ``fpvm machine init`` accepts: protective MBR + GPT header, zeros after."""
    head = bytearray(1024)
    head[446 + 4] = 0xEE  # partition type of the protective MBR entry (UEFI spec 5.2.3)
    head[510:512] = b"\x55\xaa"
    head[512:520] = b"EFI PART"  # GPT header signature at LBA 1
    with path.open("wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return path


def add_freebsd_base(root: Path, zones: tuple[str, ...] = ("Europe/Paris",)) -> Path:
    """Add what FreeBSD's base gives a root that the guest relies on: accounts, /root, /home -> usr/home."""
    for d in (
        "etc",
        "root",
        "usr/home",
        "usr/local/bin",
        "usr/local/etc",
        "bin",
        "var/db",
        "var/log",
        "var/run",
        "tmp",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "root", 0o700)
    if not (root / "home").is_symlink():
        (root / "home").symlink_to("usr/home")
    write_accounts(root)
    (root / "bin/sh").write_bytes(b"")
    for zone in zones:
        z = root / "usr/share/zoneinfo" / zone
        z.parent.mkdir(parents=True, exist_ok=True)
        z.write_bytes(b"TZif2")
    return root


def records(path: Path) -> list[list[str]]:
    """The argv of every command the guest recorded (JSON lines ``{"argv": [...]}``)."""
    if not path.exists():
        return []
    return [json.loads(line)["argv"] for line in path.read_text().splitlines() if line.strip()]


def master_passwd(root: Path) -> dict[str, list[str]]:
    """name -> fields of the root's etc/master.passwd."""
    out: dict[str, list[str]] = {}
    for line in (root / "etc/master.passwd").read_text().splitlines():
        if line and not line.startswith("#"):
            fields = line.split(":")
            out.setdefault(fields[0], fields)
    return out


def resolve_in_root(root: Path, path: str, limit: int = 40) -> str:
    """Resolve ``path`` as the guest would, with every symlink (absolute ones too) kept inside ``root``.

    Returns the guest path (``/var/run/podman/podman.sock``); the last component need not exist.
    """
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name == ".":
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        host = root.joinpath(*done, name)
        if host.is_symlink():
            hops += 1
            if hops > limit:
                raise AssertionError(f"too many links resolving {path} in {root}")
            target = os.readlink(host)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        done.append(name)
    return "/" + "/".join(done)


def shell_value(file: Path, name: str) -> str:
    """What ``. FILE; echo $NAME`` prints in a real POSIX sh (how rc.subr's load_rc_config reads it)."""
    result = subprocess.run(
        ["sh", "-c", '. "$1"; eval "v=\\${$2}"; printf %s "$v"', "sh", str(file), name],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def wait_for_qmp(sock: Path, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Wait until QEMU's QMP socket greets; fail with QEMU's log if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"QEMU exited {process.returncode}: {log.read_text(errors='replace')}")
        if sock.exists():
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.settimeout(5)
                    probe.connect(str(sock))
                    if probe.makefile("rb").readline().startswith(b'{"QMP"'):
                        return  # closing frees the monitor for the next client
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"QEMU opened no QMP socket within {timeout} s: {log.read_text(errors='replace')}"
            )
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill a process this test started (by its own handle) and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)
