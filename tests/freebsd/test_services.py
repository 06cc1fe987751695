"""podman's API socket, docker.sock and proxy variables on a live guest (service(8), procstat(1), stat(1))."""

from __future__ import annotations

import shlex
from typing import Any

from freebsd_target import Target

SOCKET = "/var/run/podman/podman.sock"


def test_api_socket_group_and_mode(target: Target) -> None:
    """The port's podman_service makes the socket's directory and socket group-accessible (wheel, 0770)."""
    assert target.check("service podman_service status").strip()
    for path in ("/var/run/podman", SOCKET):
        group, mode = target.check(f"stat -f '%Sg %Lp' {path}").split()
        assert (group, mode) == ("wheel", "770"), f"{path}: group {group}, mode {mode}"


def test_machine_user_reaches_the_api(target: Target, machine_user: str) -> None:
    uid = target.check(f"id -u {machine_user}").strip()
    sock = f"/var/run/user/{uid}/podman/podman.sock"
    line = f"printf 'GET /_ping HTTP/1.0\\r\\n\\r\\n' | nc -U {sock}"
    out = target.check(f"su -m {machine_user} -c {shlex.quote(line)} </dev/null")
    assert out.startswith("HTTP/1.") and "OK" in out


def test_run_path_reaches_the_same_socket(target: Target) -> None:
    """podman 4.x stored ssh://…/run/podman/podman.sock: /run -> var/run makes it the same file."""
    assert target.check(f"stat -L -f %i /run/podman/podman.sock {SOCKET}").split("\n")[0] == target.check(
        f"stat -L -f %i {SOCKET}"
    ).strip()


def test_docker_sock_points_at_the_api_socket(target: Target) -> None:
    link = target.check("readlink /var/run/docker.sock").strip()
    assert link in ("/run/podman/podman.sock", SOCKET), link


def test_proxy_variables_reach_login_shells_and_the_service(target: Target, machine_user: str) -> None:
    """Variables from podman's environment (fw_cfg entry or 5.x environment.d) reach a login shell and
    the running service's environment (procstat -e)."""
    conf = target.run("sysrc -f /etc/rc.conf.d/podman_service -n podman_service_env").text.strip()
    expected = dict(item.split("=", 1) for item in conf.split() if "=" in item)
    login_env = target.check(f"su -l {machine_user} -c env </dev/null")
    pid = target.check("cat /var/run/podman_service.pid").strip()
    service_env = target.check(f"procstat -e {pid}")
    for name, value in expected.items():
        assert f"{name}={value}" in login_env
        assert f"{name}={value}" in service_env
    if not expected:
        assert "HTTP_PROXY=" not in login_env and "HTTP_PROXY=" not in service_env


def test_storage_driver_matches_the_root_file_system(target: Target, config: dict[str, Any]) -> None:
    driver = target.check("podman info --format '{{.Store.GraphDriverName}}'").strip()
    fs = target.check("mount -p | awk '$2 == \"/\" {print $3}'").strip()
    assert driver == ("zfs" if fs == "zfs" else "vfs"), (driver, fs)
