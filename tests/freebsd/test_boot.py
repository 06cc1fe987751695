"""Boot order, first and later boots, readiness and disk growth on a live fpvm guest.

Commands: rcorder(8), service(8), gpart(8), sysctl(8), daemon(8); paths from docs/guest-boot.md.
"""

from __future__ import annotations

import json
from typing import Any

from freebsd_target import Target

RC_DIRS = "/etc/rc.d/* /usr/local/etc/rc.d/*"


def test_rcorder_places_the_agent_between_network_and_sshd(target: Target) -> None:
    """rcorder(8) sorts fpvm after NETWORKING and before sshd/podman_service; fpvm_ready after both."""
    res = target.run(f"rcorder {RC_DIRS}")
    order = [line.rsplit("/", 1)[-1] for line in res.text.split("\n") if line]
    warnings = [line for line in res.stderr.decode(errors="replace").split("\n") if "fpvm" in line]
    assert warnings == [], warnings
    pos = {name: i for i, name in enumerate(order)}
    for name in ("fpvm", "fpvm_ready", "sshd", "NETWORKING", "podman_service"):
        assert name in pos, f"{name} missing from rcorder's list"
    assert pos["NETWORKING"] < pos["fpvm"] < pos["sshd"] < pos["fpvm_ready"]
    assert pos["fpvm"] < pos["podman_service"] < pos["fpvm_ready"]


def test_first_boot_provisioned_and_firstboot_sentinel_gone(
    target: Target, last_boot: dict[str, Any]
) -> None:
    """The first boot provisioned the config (state says when) and /firstboot is gone afterwards."""
    state = json.loads(target.read("/var/db/fpvm/state.json"))
    assert state.get("provisioned"), state
    assert state.get("config_sha256") == last_boot["config_sha256"]
    assert not target.exists("/firstboot")


def test_second_boot_step_reprovisions_nothing(target: Target) -> None:
    """The every-boot step (as rc.d/fpvm runs it after the first boot) runs no pw and changes no account."""
    before = target.check("sha256 -q /etc/master.passwd /etc/group")
    target.check("service fpvm start")
    assert target.check("sha256 -q /etc/master.passwd /etc/group") == before
    log = target.check("tail -n 50 /var/log/fpvm.log")
    assert "pw " not in log.split("service fpvm start")[-1]


def test_run_link_and_per_user_api_socket_links(target: Target, config: dict[str, Any]) -> None:
    """/run -> var/run (image) and /var/run/user/<uid>/podman/podman.sock (every boot)."""
    assert target.check("readlink /run").strip() in ("var/run", "/var/run")
    for user in config.get("passwd", {}).get("users", []):
        if user.get("name") == "root" or user.get("shouldExist") is False:
            continue
        uid = target.check(f"id -u {user['name']}").strip()
        link = f"/var/run/user/{uid}/podman/podman.sock"
        assert target.check(f"readlink {link}").strip().endswith("/var/run/podman/podman.sock")


def test_ready_port_exists_and_ready_was_sent(target: Target) -> None:
    """QEMU's virtserialport named org.fedoraproject.port.0 appears under /dev/vtcon; Ready was written."""
    assert target.exists("/dev/vtcon/org.fedoraproject.port.0")
    log = target.check("cat /var/log/fpvm.log")
    assert "Ready" in log


def test_ready_daemon_outlives_rc(target: Target) -> None:
    """rc.d/fpvm_ready started the waiter with daemon(8); it wrote Ready and exited, or still waits."""
    status = target.run("service fpvm_ready status")
    log = target.check("cat /var/log/fpvm.log")
    assert status.status == 0 or "Ready" in log


def test_growfs_left_no_free_space_at_the_end_of_the_disk(target: Target) -> None:
    """After podman's `qemu-img resize`, rc.d/fpvm_growfs grew the root: gpart(8) shows no large free tail."""
    disk = target.check("sysctl -n kern.disks").split()[-1]
    show = target.check(f"gpart show -p {disk}")
    free = [line for line in show.split("\n") if "- free -" in line]
    for line in free:
        sectors = int(line.split()[1])
        assert sectors * 512 < 64 * 1024 * 1024, f"unused space left on {disk}: {line}"


def test_acpi_power_off_is_available(target: Target, arch: str) -> None:
    """`fpvm machine stop` and podman send ACPI power-button events: S5 must be supported (amd64)."""
    if arch == "amd64":
        assert "S5" in target.check("sysctl -n hw.acpi.supported_sleep_state")
    else:
        # arm64 virt: the power key is a GPIO (gpio-keys) or ACPI GED event; either must be attached.
        devices = target.check("devinfo -v")
        assert "gpiokeys" in devices or "acpi_ged" in devices or "acpi_button" in devices, devices
