"""podman's own command lines on the guest, replayed verbatim from the captures in tests/fixtures."""

from __future__ import annotations

import shlex
from pathlib import Path

from freebsd_target import Target

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_podman_5_proxy_script_runs_under_bash_as_root(target: Target, machine_user: str) -> None:
    """podman 5.8.2's root script (`/usr/bin/bash` reading stdin) ends in `systemctl daemon-reload`."""
    script = (FIXTURES / "podman-5.8.2-qemu-capture" / "rootful-root-bash-script.txt").read_bytes()
    res = target.run("/usr/bin/bash", input=script)
    assert res.status == 0, res.stderr
    login_env = target.check(f"su -l {machine_user} -c env </dev/null")
    assert "HTTP_PROXY=http://host.containers.internal:3128" in login_env


def test_rootful_docker_sock_sequence(target: Target, machine_user: str) -> None:
    """After `podman machine set --rootful`, podman runs these two lines as the machine user."""
    lines = [
        "sudo -n bash -c 'echo \"L+  /run/docker.sock   -    -    -     -   /run/podman/podman.sock\" "
        "> /etc/tmpfiles.d/podman-docker.conf'",
        "sudo -n systemd-tmpfiles --create --prefix=/run/docker.sock",
    ]
    for line in lines:
        res = target.run(f"su -m {machine_user} -c {shlex.quote(line)} </dev/null")
        assert res.status == 0, (line, res.stderr)
    assert target.check("readlink /var/run/docker.sock").strip() == "/run/podman/podman.sock"


def test_chattr_and_mkdir_sequence_of_podman_4(target: Target, machine_user: str) -> None:
    line = "sudo -n chattr -i / ; sudo -n mkdir -p /tmp/fpvm-check-dir ; sudo -n chattr +i /"
    res = target.run(f"su -m {machine_user} -c {shlex.quote(line)} </dev/null")
    assert res.status == 0, res.stderr
    assert target.exists("/tmp/fpvm-check-dir")
