"""The QEMU command line of an fpvm machine.

It follows podman 4.x's qemu provider where the guest can tell (fw_cfg name of the config, virtio-serial
port name, MAC address for gvproxy's DHCP lease, 9p volumes) so that one image serves both, and differs
where fpvm owns the host side: user-mode networking with an ssh port forward when gvproxy is absent,
a serial console on a unix socket with a log file, and 9p tags ``fpvmN``. The QEMU syntax itself is
``qemu_argv``'s, finding QEMU and firmware ``qemu_host``'s, the accelerator ``qemu_accel``'s: the
builder VM (fpvm.image.builder_vm) shares all three.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from fpvm.contract import FWCFG_CONFIG as CONFIG_FW_CFG
from fpvm.contract import READY_PORT
from fpvm.machine.errors import MachineError
from fpvm.machine.qemu_accel import choose
from fpvm.machine.qemu_argv import PFLASH_SIZE, QemuArgv
from fpvm.machine.qemu_host import Host
from fpvm.machine.state import Machine, Paths

__all__ = ["CONFIG_FW_CFG", "GVPROXY_MAC", "PFLASH_SIZE", "READY_PORT", "Plan", "build", "find_gvproxy"]

GVPROXY_MAC = "5a:94:ef:e4:0c:ee"  # gvproxy's static DHCP lease is for this MAC (192.168.127.2)
GVPROXY_DIRS = (
    "/usr/local/libexec/podman",
    "/usr/local/lib/podman",
    "/usr/libexec/podman",
    "/usr/lib/podman",
    "/opt/podman/bin",  # podman's macOS installer
    "/opt/homebrew/bin",
    "/opt/homebrew/libexec/podman",
    "/usr/local/opt/podman/libexec/podman",
)


def find_gvproxy() -> str | None:
    found = shutil.which("gvproxy")
    if found:
        return found
    for d in GVPROXY_DIRS:
        candidate = Path(d) / "gvproxy"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@dataclasses.dataclass(frozen=True)
class Plan:
    """A resolved start: the argv plus the choices worth telling the user."""

    argv: list[str]
    accel: str
    network: str  # user | gvproxy
    gvproxy_argv: list[str] | None


def gvproxy_argv(gvproxy: str, machine: Machine, paths: Paths) -> list[str]:
    """gvproxy as podman 5 starts it: a unix socket QEMU's ``-netdev stream`` connects to, ssh forward."""
    return [
        gvproxy,
        "-listen-qemu",
        f"unix://{paths.gvproxy_sock}",
        "-ssh-port",
        str(machine.ssh_port),
        "-pid-file",
        str(paths.gvproxy_pidfile),
    ]


def build(
    machine: Machine,
    paths: Paths,
    *,
    qemu: str,
    host: Host,
    accel: str = "auto",
    network: str = "auto",
    firmware: Path | None = None,
    gvproxy: str | None = None,
) -> Plan:
    """The full argv. Pure apart from the arguments: locating binaries and probing are the caller's job
    (``accel`` is normally what ``qemu_accel.resolve`` chose; ``auto`` here takes the unprobed choice)."""
    chosen = choose(machine.arch, host)[0] if accel == "auto" else accel
    net = network
    if net == "auto":
        net = "gvproxy" if gvproxy else "user"
    if net == "gvproxy" and not gvproxy:
        raise MachineError("--network gvproxy: gvproxy not found (it comes with podman)")
    if machine.arch == "aarch64" and firmware is None:
        raise MachineError("aarch64 needs UEFI firmware")

    vm = QemuArgv(
        qemu, machine.arch, chosen, memory=machine.memory, cpus=machine.cpus, name=f"fpvm-{machine.name}"
    )
    vm.firmware(firmware, paths.efi_vars)
    vm.virtio_disk(paths.disk, machine.disk_format)
    if net == "gvproxy":
        vm.stream_net(paths.gvproxy_sock, mac=GVPROXY_MAC)
    else:
        vm.user_net(ssh_port=machine.ssh_port, mac=GVPROXY_MAC)
    vm.fw_cfg(CONFIG_FW_CFG, paths.config)
    for vol in machine.volumes:
        vm.virtfs(vol.source, vol.tag, readonly=vol.readonly)
    vm.virtio_serial_port(READY_PORT, paths.ready)
    vm.qmp(paths.qmp)
    vm.serial_socket(paths.console, paths.console_log)
    vm.add("-display", "none")
    vm.pidfile(paths.pidfile)
    return Plan(
        argv=vm.argv,
        accel=chosen,
        network=net,
        gvproxy_argv=gvproxy_argv(gvproxy, machine, paths) if net == "gvproxy" and gvproxy else None,
    )
