"""The QEMU command line of an fpvm machine, and the host facts it depends on.

It follows podman 4.x's qemu provider where the guest can tell (fw_cfg name of the config, virtio-serial
port name, MAC address for gvproxy's DHCP lease, 9p volumes) so that one image serves both, and differs
where fpvm owns the host side: user-mode networking with an ssh port forward when gvproxy is absent,
a serial console on a unix socket with a log file, and 9p tags ``fpvmN``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

from fpvm import arch as archmod
from fpvm.contract import FWCFG_CONFIG as CONFIG_FW_CFG
from fpvm.contract import READY_PORT
from fpvm.machine.errors import MachineError
from fpvm.machine.state import Machine, Paths

GVPROXY_MAC = "5a:94:ef:e4:0c:ee"  # gvproxy's static DHCP lease is for this MAC (192.168.127.2)
PFLASH_SIZE = 64 << 20

# edk2 for aarch64 in the places packagers put it. Files of exactly 64 MiB are pflash images (need a
# vars file beside them); smaller ones (Debian's QEMU_EFI.fd, 2 MiB) are loaded with -bios.
_FIRMWARE_NAMES = ("edk2-aarch64-code.fd", "QEMU_EFI.fd", "AAVMF_CODE.fd", "QEMU_EFI-pflash.raw")
_FIRMWARE_DIRS = (
    "/opt/homebrew/share/qemu",
    "/usr/local/share/qemu",
    "/opt/local/share/qemu",  # MacPorts
    "/usr/share/qemu-efi-aarch64",  # Debian/Ubuntu qemu-efi-aarch64
    "/usr/share/AAVMF",  # Debian/Ubuntu AAVMF
    "/usr/share/edk2/aarch64",  # Fedora
    "/usr/share/qemu",
)

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

_INSTALL_HINT = {
    "darwin": "brew install qemu",
    "linux": "apt install qemu-system-x86 qemu-system-arm (Debian/Ubuntu) or dnf install qemu-system-x86 "
    "qemu-system-aarch64 (Fedora)",
}


@dataclasses.dataclass(frozen=True)
class Host:
    """What the launcher needs to know about the host; tests build one by hand."""

    system: str  # sys.platform: darwin | linux | freebsd...
    arch: str  # FreeBSD naming
    kvm: bool  # /dev/kvm usable

    @classmethod
    def detect(cls) -> Host:
        return cls(system=sys.platform, arch=archmod.host(), kvm=kvm_usable())


def opt(value: object) -> str:
    """A value for a QEMU option string (``key=value,key=value``): a ``,`` in it is written ``,,``.

    Without this a data folder such as ``/Users/me/da,ta`` ends the value early: QEMU reads ``ta/...`` as
    an option of its own and opens the wrong file. Values that go as a whole argument (``-pidfile``,
    ``-bios``) are not option strings and stay as they are.
    """
    return str(value).replace(",", ",,")


def kvm_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def find_qemu(arch: str) -> str:
    """The emulator for ``arch``: ``$FPVM_QEMU`` when set (a custom build or a stand-in), else PATH."""
    override = os.environ.get("FPVM_QEMU")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise MachineError(f"FPVM_QEMU={override} is not an executable file")
        return override
    name = f"qemu-system-{archmod.qemu_name(arch)}"
    found = shutil.which(name)
    if not found:
        hint = _INSTALL_HINT.get(sys.platform, "install QEMU from your package manager")
        raise MachineError(f"{name} not found on PATH: install QEMU ({hint})")
    return found


def find_firmware(qemu: str | None = None) -> Path:
    """edk2 for aarch64: next to the QEMU binary's share dir first, then the usual places."""
    override = os.environ.get("FPVM_FIRMWARE")
    if override:
        path = Path(override)
        if not path.is_file():
            raise MachineError(f"FPVM_FIRMWARE={override} does not exist")
        return path
    dirs: list[Path] = []
    if qemu:
        dirs.append(Path(qemu).resolve().parent.parent / "share" / "qemu")
    dirs.extend(Path(d) for d in _FIRMWARE_DIRS)
    for d in dirs:
        for name in _FIRMWARE_NAMES:
            candidate = d / name
            if candidate.is_file():
                return candidate
    raise MachineError(
        "no UEFI firmware for aarch64 found (looked for edk2-aarch64-code.fd, QEMU_EFI.fd, AAVMF_CODE.fd in "
        f"{', '.join(str(d) for d in dict.fromkeys(dirs))}): install it (brew install qemu; Debian/Ubuntu: "
        "apt install qemu-efi-aarch64) or set FPVM_FIRMWARE to the file"
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


def choose_accel(machine_arch: str, host: Host, requested: str = "auto") -> str:
    """hvf on macOS, kvm on Linux with a usable /dev/kvm, else tcg (slow: the caller warns)."""
    if requested != "auto":
        return requested
    if machine_arch != host.arch:
        return "tcg"
    if host.system == "darwin":
        return "hvf"
    if host.system.startswith("linux") and host.kvm:
        return "kvm"
    return "tcg"


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
    """The full argv. Pure apart from the arguments: locating binaries is the caller's job."""
    chosen = choose_accel(machine.arch, host, accel)
    argv: list[str] = [qemu, "-name", f"fpvm-{machine.name}"]

    if machine.arch == "aarch64":
        options = "virt,highmem=on" if chosen == "hvf" else "virt,gic-version=max"
        argv += ["-machine", options]
    else:
        argv += ["-machine", "q35"]
    argv += ["-accel", chosen, "-cpu", "host" if chosen in ("kvm", "hvf") else "max"]
    argv += ["-m", str(machine.memory), "-smp", str(machine.cpus)]

    if machine.arch == "aarch64":
        if firmware is None:
            raise MachineError("aarch64 needs UEFI firmware")
        if firmware.stat().st_size == PFLASH_SIZE:
            argv += [
                "-drive",
                f"if=pflash,format=raw,unit=0,readonly=on,file={opt(firmware)}",
                "-drive",
                f"if=pflash,format=raw,unit=1,file={opt(paths.efi_vars)}",
            ]
        else:
            argv += ["-bios", str(firmware)]

    argv += ["-drive", f"if=virtio,format={machine.disk_format},file={opt(paths.disk)}"]

    net = network
    if net == "auto":
        net = "gvproxy" if gvproxy else "user"
    if net == "gvproxy":
        if not gvproxy:
            raise MachineError("--network gvproxy: gvproxy not found (it comes with podman)")
        argv += ["-netdev", f"stream,id=net0,server=off,addr.type=unix,addr.path={opt(paths.gvproxy_sock)}"]
    else:
        argv += ["-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{machine.ssh_port}-:22"]
    argv += ["-device", f"virtio-net-pci,netdev=net0,mac={GVPROXY_MAC}"]

    argv += ["-fw_cfg", f"name={CONFIG_FW_CFG},file={opt(paths.config)}"]

    for vol in machine.volumes:
        spec = f"local,path={opt(vol.source)},mount_tag={vol.tag},security_model=none,id={vol.tag}"
        if vol.readonly:
            spec += ",readonly=on"
        argv += ["-virtfs", spec]

    argv += [
        "-device",
        "virtio-serial-pci,id=vser0",
        "-chardev",
        f"socket,id=ready,path={opt(paths.ready)},server=on,wait=off",
        "-device",
        f"virtserialport,bus=vser0.0,chardev=ready,name={READY_PORT}",
        "-qmp",
        f"unix:{opt(paths.qmp)},server=on,wait=off",
        "-chardev",
        f"socket,id=console,path={opt(paths.console)},server=on,wait=off,logfile={opt(paths.console_log)},"
        "logappend=on",
        "-serial",
        "chardev:console",
        "-display",
        "none",
        "-pidfile",
        str(paths.pidfile),
    ]
    return Plan(
        argv=argv,
        accel=chosen,
        network=net,
        gvproxy_argv=gvproxy_argv(gvproxy, machine, paths) if net == "gvproxy" and gvproxy else None,
    )
