"""The podman system connection that points the podman client at an fpvm machine.

FreeBSD's podman is rootful only, so the connection logs in as root and talks to root's API socket.
podman writes the connection into the user's containers.conf (4.x) or podman-connections.json (5.x);
fpvm only ever drives the ``podman system connection`` commands and never edits those files itself.
"""

from __future__ import annotations

import shutil
import subprocess

from fpvm.contract import API_SOCKET
from fpvm.machine.errors import MachineError
from fpvm.machine.state import Machine, Paths


def uri(machine: Machine) -> str:
    return f"ssh://root@127.0.0.1:{machine.ssh_port}{API_SOCKET}"


def add_argv(machine: Machine, paths: Paths, default: bool) -> list[str]:
    argv = ["podman", "system", "connection", "add"]
    if default:
        argv.append("--default")
    return [*argv, "--identity", str(paths.key), machine.connection, uri(machine)]


def add(machine: Machine, paths: Paths, default: bool) -> str | None:
    """Register (or replace) the connection; return a warning instead of failing when podman is absent.

    A missing podman client is not fatal: the VM runs and the user may install podman later, so the
    caller prints the returned text, which includes the command to run.
    """
    argv = add_argv(machine, paths, default)
    exe = shutil.which("podman")
    if exe is None:
        return "podman not found: install the podman client, then run: " + " ".join(argv)
    result = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise MachineError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return None


def remove(machine: Machine) -> str | None:
    """Remove the connection if it is there; a missing podman or connection is not an error."""
    exe = shutil.which("podman")
    if exe is None:
        return None
    result = subprocess.run(
        [exe, "system", "connection", "remove", machine.connection],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return f"could not remove podman connection {machine.connection}: {result.stderr.strip()}"
    return None
