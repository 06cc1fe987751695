"""The podman connection ``fpvm machine start`` registers must reach the API the guest serves.

The host side (``fpvm.machine.connection``) registers ``ssh://root@127.0.0.1:PORT<socket>``; the real
podman 4.3.1 client stores it (rewriting ``/var/run`` to ``/run`` as it resolves the path on the host);
the guest serves the API where the image's rc.conf.d/podman_service says and the guest agent's
constants say, and links ``/run`` so that podman's spelling reaches the same socket. Asserted through
each area's own constants and files, never through copies of the path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from integration_support import add_freebsd_base, resolve_in_root, shell_value

from fpvm.guest import apisocket, ready
from fpvm.machine import connection
from fpvm.machine import ignition as machine_ignition
from fpvm.machine.podman_machine import PodmanMachine
from fpvm.machine.state import Machine, Paths
from fpvm_runner import run_fpvm
from fpvm_support import PODMAN_CAPTURE


def a_machine(port: int = 2222) -> Machine:
    return Machine(
        name="conn",
        arch="amd64",
        cpus=2,
        memory=2048,
        disk_size=20,
        disk_format="raw",
        ssh_port=port,
        uid=1000,
        image_source="freebsd.raw",
        created="2026-01-01T00:00:00+00:00",
    )


@pytest.fixture(scope="module")
def guest_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The amd64 overlay + FreeBSD base, provisioned with the config ``fpvm machine`` writes."""
    tmp_path = tmp_path_factory.mktemp("guest")
    root = tmp_path / "root"
    result = run_fpvm("image", "overlay", str(root), "--arch", "amd64", text=False)
    assert result.returncode == 0, result.stderr
    add_freebsd_base(root)
    config = machine_ignition.build("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIConn conn@test", 1000, [], None)
    cfg = tmp_path / "config.ign"
    cfg.write_bytes(machine_ignition.render(config))
    result = run_fpvm("guest", "provision", "--root", str(root), "--config", str(cfg), "--record",
                      str(tmp_path / "cmds.jsonl"), "--no-ready", text=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def test_uri_socket_is_the_guests_api_socket() -> None:
    uri = urllib.parse.urlsplit(connection.uri(a_machine(40022)))
    assert (uri.scheme, uri.username, uri.hostname, uri.port) == ("ssh", "root", "127.0.0.1", 40022)
    assert uri.path == connection.API_SOCKET == apisocket.API_SOCKET == ready.API_SOCKET


def test_image_serves_the_api_where_the_connection_points(guest_root: Path) -> None:
    conf = guest_root / "etc/rc.conf.d/podman_service"
    path = urllib.parse.urlsplit(connection.uri(a_machine())).path
    assert shell_value(conf, "podman_service_enable") == "YES"
    assert shell_value(conf, "podman_service_api_socket") == path
    assert f"unix://{path}" in shell_value(conf, "podman_service_flags").split()


def test_podman_stores_a_uri_that_reaches_the_guests_socket(guest_root: Path, tmp_path: Path) -> None:
    """Register with the real podman client, exactly as ``start`` does, and follow the stored path."""
    podman = shutil.which("podman")
    if podman is None:
        pytest.fail("podman is not installed: this test needs the real podman 4.3.1 client")
    home = tmp_path / "home"
    home.mkdir()
    conf = tmp_path / "containers.conf"
    conf.touch()
    # podman as root writes /etc/containers/containers.conf unless CONTAINERS_CONF names another file.
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "CONTAINERS_CONF": str(conf),
    }
    machine = a_machine()
    paths = Paths(tmp_path / "machine", tmp_path / "run")
    argv = connection.add_argv(machine, paths, default=False)
    assert argv[0] == "podman"
    subprocess.run([podman, *argv[1:]], env=env, check=True, capture_output=True)
    listed = subprocess.run(
        [podman, "system", "connection", "list", "--format", "json"],
        env=env,
        check=True,
        capture_output=True,
    )
    entries = {e["Name"]: e for e in json.loads(listed.stdout)}
    stored = entries[machine.connection]
    assert stored["Identity"] == str(paths.key)
    uri = urllib.parse.urlsplit(stored["URI"])
    assert (uri.scheme, uri.username, uri.hostname, uri.port) == (
        "ssh",
        "root",
        "127.0.0.1",
        machine.ssh_port,
    )
    # podman 4.3.1 on a host where /var/run -> /run stores /run/podman/podman.sock; the guest's
    # /run -> var/run (image, kept by the agent) makes it the service's socket again.
    assert resolve_in_root(guest_root, uri.path) == apisocket.API_SOCKET


@pytest.mark.parametrize("rootful", [False, True], ids=["rootless", "rootful"])
def test_podman_machine_api_socket_reaches_the_service(
    rootful: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """podman 4.3.1's own machine (the capture: its machine.json and the Ignition it sent) on the image:
    the guest socket ``fpvm podman-machine doctor`` checks, and gvproxy forwards to, is the service's."""
    tmp_path = tmp_path_factory.mktemp("podman-machine")
    root = tmp_path / "root"
    assert run_fpvm("image", "overlay", str(root), "--arch", "amd64", text=False).returncode == 0
    add_freebsd_base(root)
    result = run_fpvm("guest", "provision", "--root", str(root), "--config",
                      str(PODMAN_CAPTURE / "machine.ign"), "--record", str(tmp_path / "cmds.jsonl"),
                      "--no-ready", text=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((PODMAN_CAPTURE / "machine.json").read_text())
    machine = PodmanMachine(PODMAN_CAPTURE / "machine.json", {**data, "Rootful": rootful})
    assert resolve_in_root(root, machine.guest_api_socket) == apisocket.API_SOCKET
