"""What the image itself must provide: loader modules, pf, file systems, sshd and sudo configuration.

Commands: kldstat(8), sysctl(8), pfctl(8), mount(8), sshd(8), visudo(8), python3.
"""

from __future__ import annotations

import pytest
from freebsd_target import Target


@pytest.mark.parametrize("module", ["virtio_p9fs", "p9fs", "virtio_console", "pf", "fusefs"])
def test_loader_conf_d_modules_are_loaded(target: Target, module: str) -> None:
    assert module in target.check("kldstat -v"), f"{module} is not loaded (loader.conf.d)"


def test_pf_filters_local_traffic_and_accepts_the_ruleset(target: Target) -> None:
    assert target.check("sysctl -n net.pf.filter_local").strip() == "1"
    target.check("pfctl -nf /etc/pf.conf")


def test_root_and_esp_by_label_and_fdescfs(target: Target) -> None:
    mounts = target.check("mount -p")
    assert any(line.split()[1] == "/" for line in mounts.split("\n") if line)
    assert "/dev/fd" in mounts and "fdescfs" in mounts
    assert target.exists("/boot/efi")


def test_sshd_accepts_the_drop_in(target: Target) -> None:
    target.check("sshd -t")
    effective = target.check("sshd -T")
    assert "passwordauthentication no" in effective


def test_sudoers_includes_the_drop_in_folder(target: Target) -> None:
    target.check("visudo -c")
    assert "@includedir /usr/local/etc/sudoers.d" in target.check("cat /usr/local/etc/sudoers")


def test_python_is_new_enough_for_the_agent(target: Target) -> None:
    major, minor = target.check("python3 -c 'import sys; print(*sys.version_info[:2])'").split()
    assert (int(major), int(minor)) >= (3, 11)


def test_deeply_nested_config_is_reported_not_killed(target: Target) -> None:
    """Deep documents are parsed on a thread with a 128 MiB stack, which FreeBSD's libthr must grant."""
    depth = 9999
    doc = '{"ignition":{"version":"3.2.0"},"x":' + "[" * depth + "]" * depth + "}"
    res = target.run("fpvm ignition validate -q -", input=doc.encode())
    assert res.status in (0, 1), res.stderr


def test_podman_fixtures_validate_on_the_guest(target: Target) -> None:
    """The engine on the image's python3 agrees with the host about podman's configs."""
    from pathlib import Path

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "podman-ignition"
    for path in sorted(fixtures.glob("*.ign")):
        res = target.run("fpvm ignition validate -q -", input=path.read_bytes())
        assert res.status == 0, (path.name, res.stderr)


def test_root_has_no_password_login_over_ssh(target: Target) -> None:
    """Base root has an empty password for the serial console only; sshd refuses passwords."""
    effective = target.check("sshd -T").split("\n")
    assert "permitrootlogin without-password" in effective or "permitrootlogin prohibit-password" in effective
