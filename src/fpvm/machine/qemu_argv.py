"""The one place that writes QEMU command lines: `fpvm machine`, the builder VM and the accelerator probe.

QEMU's option strings (``key=value,key=value``) end a value at a ``,``; a literal comma is written
``,,``. Every path that goes into an option string passes through ``opt()`` here, so a data folder such
as ``/Users/me/da,ta`` reaches QEMU intact whoever builds the VM. Callers describe the VM with the
methods of ``QemuArgv`` and never write option strings themselves.
"""

from __future__ import annotations

from pathlib import Path

PFLASH_SIZE = 64 << 20  # edk2 pflash images (Homebrew, AAVMF) are exactly this size; -bios ones are smaller


def opt(value: object) -> str:
    """A value for a QEMU option string (``key=value,key=value``): a ``,`` in it is written ``,,``.

    Without this a data folder such as ``/Users/me/da,ta`` ends the value early: QEMU reads ``ta/...`` as
    an option of its own and opens the wrong file. Values that go as a whole argument (``-pidfile``,
    ``-bios``) are not option strings and stay as they are.
    """
    return str(value).replace(",", ",,")


def machine_type(arch: str, accel: str) -> str:
    """``q35`` for amd64; ``virt`` for aarch64 (HVF wants high memory, the others the newest GIC)."""
    if arch == "aarch64":
        return "virt,highmem=on" if accel == "hvf" else "virt,gic-version=max"
    return "q35"


def cpu_model(accel: str) -> str:
    """The host's CPU under KVM/HVF; under TCG the most capable emulated one."""
    return "host" if accel in ("kvm", "hvf") else "max"


def platform_args(arch: str, accel: str) -> list[str]:
    """Machine type, accelerator and CPU: the part the accelerator probe shares with every real VM."""
    return ["-machine", machine_type(arch, accel), "-accel", accel, "-cpu", cpu_model(accel)]


class QemuArgv:
    """Builds one argv in order; each method adds one device or setting in QEMU's own syntax."""

    def __init__(self, qemu: str, arch: str, accel: str, *, memory: int, cpus: int, name: str | None = None):
        self.arch = arch
        self.argv: list[str] = [qemu]
        if name is not None:
            self.argv += ["-name", name]
        self.argv += platform_args(arch, accel)
        self.argv += ["-m", str(memory), "-smp", str(cpus)]

    def add(self, *args: str) -> None:
        """Plain arguments with no option string to escape (``-no-reboot``, ``-display none``)."""
        self.argv += args

    def firmware(self, code: Path | None, efi_vars: Path) -> None:
        """UEFI for aarch64: a 64 MiB pflash image gets a writable vars store beside it; smaller files
        (Debian's QEMU_EFI.fd) are loaded with ``-bios``. amd64 uses QEMU's built-in SeaBIOS."""
        if self.arch != "aarch64":
            return
        if code is None:
            raise ValueError("aarch64 needs UEFI firmware")
        if is_pflash(code):
            self.argv += [
                "-drive",
                f"if=pflash,format=raw,unit=0,readonly=on,file={opt(code)}",
                "-drive",
                f"if=pflash,format=raw,unit=1,file={opt(efi_vars)}",
            ]
        else:
            self.argv += ["-bios", str(code)]

    def virtio_disk(self, file: Path, fmt: str) -> None:
        """A virtio disk QEMU names itself (``virtio0``...)."""
        self.argv += ["-drive", f"if=virtio,format={fmt},file={opt(file)}"]

    def virtio_blk(
        self, drive_id: str, file: Path, fmt: str, *, readonly: bool = False, bootindex: int | None = None
    ) -> None:
        """A virtio disk with a name of ours (QMP's ``query-block`` shows it as ``drive_id``)."""
        spec = f"if=none,id={drive_id},file={opt(file)},format={fmt}"
        if readonly:
            spec += ",readonly=on"
        device = f"virtio-blk-pci,drive={drive_id}"
        if bootindex is not None:
            device += f",bootindex={bootindex}"
        self.argv += ["-drive", spec, "-device", device]

    def user_net(self, *, ssh_port: int | None = None, mac: str | None = None) -> None:
        """QEMU's user-mode network; with ``ssh_port`` the guest's port 22 on 127.0.0.1:ssh_port."""
        spec = "user,id=net0"
        if ssh_port is not None:
            spec += f",hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
        self.argv += ["-netdev", spec]
        self._nic(mac)

    def stream_net(self, socket_path: Path, *, mac: str | None = None) -> None:
        """The network of a unix socket server (gvproxy's ``-listen-qemu``)."""
        self.argv += ["-netdev", f"stream,id=net0,server=off,addr.type=unix,addr.path={opt(socket_path)}"]
        self._nic(mac)

    def _nic(self, mac: str | None) -> None:
        self.argv += ["-device", "virtio-net-pci,netdev=net0" + (f",mac={mac}" if mac else "")]

    def rng(self) -> None:
        """Entropy from the host (a fresh guest generating keys need not wait for it)."""
        self.argv += ["-device", "virtio-rng-pci"]

    def fw_cfg(self, name: str, file: Path) -> None:
        self.argv += ["-fw_cfg", f"name={name},file={opt(file)}"]

    def virtfs(self, source: str, tag: str, *, readonly: bool) -> None:
        """A 9p share; the tag doubles as the device id."""
        spec = f"local,path={opt(source)},mount_tag={tag},security_model=none,id={tag}"
        if readonly:
            spec += ",readonly=on"
        self.argv += ["-virtfs", spec]

    def virtio_serial_port(self, port_name: str, socket_path: Path, chardev_id: str = "ready") -> None:
        """A named virtio-serial port backed by a unix socket server (podman's readiness port)."""
        self.argv += [
            "-device",
            "virtio-serial-pci,id=vser0",
            "-chardev",
            socket_chardev(chardev_id, socket_path),
            "-device",
            f"virtserialport,bus=vser0.0,chardev={chardev_id},name={port_name}",
        ]

    def qmp(self, socket_path: Path) -> None:
        self.argv += ["-qmp", f"unix:{opt(socket_path)},server=on,wait=off"]

    def serial_socket(self, socket_path: Path, log: Path, chardev_id: str = "console") -> None:
        """The serial console on a unix socket, everything it prints appended to ``log``."""
        self.argv += serial_socket_args(socket_path, log, chardev_id)

    def serial_file(self, log: Path, chardev_id: str = "serial0") -> None:
        """The serial console written to a file (no one types into a builder VM)."""
        self.argv += ["-chardev", f"file,id={chardev_id},path={opt(log)}", "-serial", f"chardev:{chardev_id}"]

    def pidfile(self, path: Path) -> None:
        self.argv += ["-pidfile", str(path)]


def socket_chardev(chardev_id: str, socket_path: Path, log: Path | None = None) -> str:
    spec = f"socket,id={chardev_id},path={opt(socket_path)},server=on,wait=off"
    if log is not None:
        spec += f",logfile={opt(log)},logappend=on"
    return spec


def serial_socket_args(socket_path: Path, log: Path, chardev_id: str = "console") -> list[str]:
    """``-chardev socket,...,logfile=... -serial chardev:ID``; also added to podman 4.x command lines."""
    return ["-chardev", socket_chardev(chardev_id, socket_path, log), "-serial", f"chardev:{chardev_id}"]


def is_pflash(firmware: Path) -> bool:
    """A 64 MiB edk2 image goes to pflash; anything else (or a file not there yet) to ``-bios``."""
    try:
        return firmware.stat().st_size == PFLASH_SIZE
    except OSError:
        return False
