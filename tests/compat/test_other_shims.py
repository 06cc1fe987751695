"""chattr, systemctl, systemd-tmpfiles, the shim entry point and the launcher scripts.

FreeBSD syntax checked here: service(8) ``service script command``; sysrc(8) ``sysrc [-f file]
name=value`` (rc configuration only in ``/etc/rc.conf.d/<service>``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fpvm.guest.compat import COMMANDS, LAUNCHER_DIR, launchers, main


def shim(root: Path, rec: Path, name: str, *args: str) -> tuple[int, list[list[str]]]:
    rec.unlink(missing_ok=True)
    rc = main(["--record", str(rec), "--root", str(root), name, *args])
    lines = rec.read_text().splitlines() if rec.exists() else []
    return rc, [json.loads(line)["argv"] for line in lines]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "var/run/podman").mkdir(parents=True)
    (r / "run").symlink_to("var/run")
    return r


# -- chattr ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["-i", "/"], ["+i", "/"], ["-R", "-i", "/etc"], ["-V", "+i", "/", "/etc"]])
def test_chattr_immutable_flag_is_a_successful_noop(root: Path, tmp_path: Path, args: list[str]) -> None:
    assert shim(root, tmp_path / "r", "chattr", *args) == (0, [])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["+a", "/"], "attribute change '+a' is not supported on FreeBSD"),
        (["=i", "/"], "attribute change '=i'"),
        (["-ia", "/"], "attribute change '-ia'"),
        (["-i"], "usage: chattr"),
        (["/"], "usage: chattr"),
        (["-i", "/nope"], "/nope: No such file or directory"),
        (["-i", "relative"], "not an absolute path"),
    ],
)
def test_chattr_errors(
    root: Path, tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert shim(root, tmp_path / "r", "chattr", *args) == (1, [])
    assert message in capsys.readouterr().err


# -- systemctl ---------------------------------------------------------------------------------------
def write_environment_d(root: Path, text: str) -> None:
    d = root / "etc/environment.d"
    d.mkdir(parents=True, exist_ok=True)
    (d / "default-env.conf").write_text(text)


def test_daemon_reload_applies_podmans_proxy_environment(root: Path, tmp_path: Path) -> None:
    # what podman 5.x's script writes with bash `printf "%q\n" "$proxy"`
    write_environment_d(root, "HTTP_PROXY=http://host.containers.internal:3128\nNO_PROXY=localhost\\,.corp\n")
    rc, cmds = shim(root, tmp_path / "r", "systemctl", "daemon-reload")
    assert rc == 0
    profile = (root / "usr/local/etc/profile.d/fpvm-proxy.sh").read_text()
    assert "export HTTP_PROXY='http://host.containers.internal:3128'" in profile
    assert "export http_proxy='http://host.containers.internal:3128'" in profile
    rcconf = (root / "etc/rc.conf.d/podman_service").read_text()
    assert "podman_service_env=" in rcconf and "host.containers.internal:3128" in rcconf
    # the environment changed: a running API service is restarted to pick it up
    assert cmds == [
        ["/usr/sbin/service", "podman_service", "status"],
        ["/usr/sbin/service", "podman_service", "restart"],
    ]
    # a second reload with the same environment changes nothing and restarts nothing
    assert shim(root, tmp_path / "r", "systemctl", "daemon-reload") == (0, [])


def test_daemon_reload_without_proxies_removes_fpvms_settings(root: Path, tmp_path: Path) -> None:
    write_environment_d(root, "HTTPS_PROXY=http://p:1\n")
    assert shim(root, tmp_path / "r", "systemctl", "daemon-reload")[0] == 0
    (root / "etc/environment.d/default-env.conf").unlink()  # podman's script rm -f's it, writes none
    rc, cmds = shim(root, tmp_path / "r", "systemctl", "daemon-reload")
    assert rc == 0
    assert not (root / "usr/local/etc/profile.d/fpvm-proxy.sh").exists()
    conf = root / "etc/rc.conf.d/podman_service"
    assert not conf.exists() or "podman_service_env" not in conf.read_text()
    assert cmds[-1] == ["/usr/sbin/service", "podman_service", "restart"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["start", "podman.socket"], [["/usr/sbin/service", "podman_service", "start"]]),
        (["restart", "podman"], [["/usr/sbin/service", "podman_service", "restart"]]),
        (["stop", "sshd.service"], [["/usr/sbin/service", "sshd", "stop"]]),
        (
            ["enable", "--now", "podman.socket"],
            [
                ["/usr/sbin/sysrc", "-f", "/etc/rc.conf.d/podman_service", "podman_service_enable=YES"],
                ["/usr/sbin/service", "podman_service", "start"],
            ],
        ),
        (["disable", "sshd"], [["/usr/sbin/sysrc", "-f", "/etc/rc.conf.d/sshd", "sshd_enable=NO"]]),
        (["-q", "restart", "podman-restart.service"], [["/usr/sbin/service", "podman", "restart"]]),
    ],
)
def test_known_units_go_to_service_and_sysrc(
    root: Path, tmp_path: Path, args: list[str], expected: list[list[str]]
) -> None:
    assert shim(root, tmp_path / "r", "systemctl", *args) == (0, expected)


@pytest.mark.parametrize(
    "args",
    [
        ["status", "podman.socket"],
        ["start", "zincati.service"],
        ["mask", "docker.socket"],
        ["is-system-running"],
        [],
    ],
)
def test_everything_else_exits_0_with_a_log_line(root: Path, tmp_path: Path, args: list[str]) -> None:
    assert shim(root, tmp_path / "r", "systemctl", *args) == (0, [])
    assert "linux-compat systemctl:" in (root / "var/log/fpvm.log").read_text()


# -- systemd-tmpfiles --------------------------------------------------------------------------------
DOCKER_LINE = "L+  /run/docker.sock   -    -    -     -   /run/podman/podman.sock\n"


def test_tmpfiles_creates_podmans_docker_sock_link(root: Path, tmp_path: Path) -> None:
    (root / "etc/tmpfiles.d").mkdir()
    (root / "etc/tmpfiles.d/podman-docker.conf").write_text(DOCKER_LINE)
    (root / "etc/tmpfiles.d/other.conf").write_text("d /run/other 0755 root root -\nL /run/x - - - - /y\n")
    rc, cmds = shim(root, tmp_path / "r", "systemd-tmpfiles", "--create", "--prefix=/run/docker.sock")
    assert (rc, cmds) == (0, [])
    assert os.readlink(root / "var/run/docker.sock") == "/run/podman/podman.sock"
    assert not (root / "var/run/x").is_symlink()  # outside the prefix
    # rootless after rootful: podman rewrites the line; L+ replaces the link
    (root / "etc/tmpfiles.d/podman-docker.conf").write_text(
        DOCKER_LINE.replace("podman/", "user/501/podman/")
    )
    assert shim(root, tmp_path / "r", "systemd-tmpfiles", "--create", "--prefix=/run/docker.sock")[0] == 0
    assert os.readlink(root / "var/run/docker.sock") == "/run/user/501/podman/podman.sock"
    # without a prefix every L line is done; other types are skipped
    assert shim(root, tmp_path / "r", "systemd-tmpfiles", "--create")[0] == 0
    assert os.readlink(root / "var/run/x") == "/y"
    assert not (root / "var/run/other").exists()


def test_tmpfiles_without_create_does_nothing(root: Path, tmp_path: Path) -> None:
    assert shim(root, tmp_path / "r", "systemd-tmpfiles", "--clean") == (0, [])


# -- entry point and launchers -----------------------------------------------------------------------
@pytest.mark.parametrize("argv", [[], ["--record"], ["--bogus", "mount"], ["ls", "-l"], ["--record", "x"]])
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: fpvm guest shim" in capsys.readouterr().err


def test_launchers_are_valid_sh_and_pass_arguments_verbatim(tmp_path: Path) -> None:
    fake = tmp_path / "fake-fpvm"
    fake.write_text("#!/bin/sh\nexec python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' \"$@\"\n")
    fake.chmod(0o755)
    texts = launchers(fpvm=str(fake))
    assert sorted(texts) == sorted(COMMANDS)
    for name, text in texts.items():
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o755)
        assert subprocess.run(["sh", "-n", str(path)]).returncode == 0
        args = ["-t", "virtiofs", "tag", "/a b", 'context="x:y"', "$HOME", ""]
        out = subprocess.run([str(path), *args], capture_output=True, text=True, check=True).stdout
        assert json.loads(out) == ["guest", "shim", name, *args]
    assert launchers()["mount"].splitlines()[-1] == 'exec /usr/local/bin/fpvm guest shim mount "$@"'
    assert LAUNCHER_DIR == "/usr/local/libexec/fpvm/linux-compat"


def test_fpvm_cli_reaches_the_shims(tmp_path: Path, root: Path) -> None:
    fpvm = shutil.which("fpvm", path=str(Path(sys.executable).parent))
    assert fpvm
    rec = tmp_path / "rec.jsonl"
    (root / "tmp").mkdir()
    cmd = [fpvm, "guest", "shim", "--record", str(rec), "--root", str(root), "mount", "-t", "9p", "-o",
           "trans=virtio", "vol0", "/tmp"]  # fmt: skip
    assert subprocess.run(cmd).returncode == 0
    assert [json.loads(x)["argv"] for x in rec.read_text().splitlines()][-1] == [
        "/sbin/mount", "-t", "p9fs", "vol0", "/tmp"
    ]  # fmt: skip


def test_daemon_reload_keeps_the_saved_cert_variables(root: Path, tmp_path: Path) -> None:
    # The boot step remembered podman 5.x's SSL_CERT_FILE (from the Ignition) in the agent's state.
    state = root / "var/db/fpvm/state.json"
    state.parent.mkdir(parents=True)
    state.write_text(
        json.dumps({"cert_env": {"SSL_CERT_FILE": "/etc/containers/certs.d/ca.pem", "PATH": "/x"}})
    )
    write_environment_d(root, "HTTP_PROXY=http://p:1\n")
    assert shim(root, tmp_path / "r", "systemctl", "daemon-reload")[0] == 0
    rcconf = (root / "etc/rc.conf.d/podman_service").read_text()
    assert "SSL_CERT_FILE='/usr/local/etc/containers/certs.d/ca.pem'" in rcconf
    assert "HTTP_PROXY='http://p:1'" in rcconf and "PATH=" not in rcconf
