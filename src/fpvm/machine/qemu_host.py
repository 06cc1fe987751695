"""Finding QEMU and its firmware on the host, for `fpvm machine` and the builder VM alike.

``$FPVM_QEMU`` replaces the emulator (a custom build, or the tests' stand-in); ``$FPVM_FIRMWARE`` the
aarch64 UEFI firmware. Otherwise QEMU comes from PATH and edk2 from where Homebrew, MacPorts, Debian/
Ubuntu and Fedora put it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

from fpvm import arch as archmod
from fpvm.machine.errors import MachineError
from fpvm.machine.qemu_argv import PFLASH_SIZE

# edk2 for aarch64. Files of exactly 64 MiB are pflash images (need a vars file beside them); smaller
# ones (Debian's QEMU_EFI.fd, 2 MiB) are loaded with -bios.
FIRMWARE_NAMES = ("edk2-aarch64-code.fd", "QEMU_EFI.fd", "AAVMF_CODE.fd", "QEMU_EFI-pflash.raw")
FIRMWARE_DIRS = (
    "/opt/homebrew/share/qemu",  # Homebrew on Apple silicon
    "/usr/local/share/qemu",  # Homebrew on Intel, source builds
    "/opt/local/share/qemu",  # MacPorts
    "/usr/share/qemu-efi-aarch64",  # Debian/Ubuntu qemu-efi-aarch64
    "/usr/share/AAVMF",  # Debian/Ubuntu AAVMF
    "/usr/share/edk2/aarch64",  # Fedora
    "/usr/share/qemu",
)

INSTALL_HINT = {
    "darwin": "brew install qemu",
    "linux": "apt install qemu-system-x86 qemu-system-arm qemu-utils (Debian/Ubuntu) or dnf install "
    "qemu-system-x86 qemu-system-aarch64 qemu-img (Fedora)",
}


@dataclasses.dataclass(frozen=True)
class Host:
    """What the accelerator choice needs to know about the host; tests build one by hand."""

    system: str  # sys.platform: darwin | linux | freebsd...
    arch: str  # FreeBSD naming
    kvm: bool  # /dev/kvm can be opened

    @classmethod
    def detect(cls) -> Host:
        return cls(system=sys.platform, arch=archmod.host(), kvm=kvm_usable())


def kvm_usable() -> bool:
    """/dev/kvm opens read-write. Whether QEMU can run a VM with it is the probe's question."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def install_hint() -> str:
    return INSTALL_HINT.get(sys.platform, "install QEMU from your package manager")


def qemu_command(arch: str) -> str:
    """What argv[0] will be: ``$FPVM_QEMU`` when set, else ``qemu-system-<arch>`` (looked up on PATH
    when run). Unchecked: for plans that are printed; ``find_qemu`` checks."""
    return os.environ.get("FPVM_QEMU") or f"qemu-system-{archmod.qemu_name(arch)}"


def find_qemu(arch: str) -> str:
    """The emulator for ``arch``: ``$FPVM_QEMU`` when set (a custom build or a stand-in), else PATH."""
    override = os.environ.get("FPVM_QEMU")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise MachineError(f"FPVM_QEMU={override} is not an executable file")
        return override
    name = qemu_command(arch)
    found = shutil.which(name)
    if not found:
        raise MachineError(f"{name} is not installed (not found on PATH): install QEMU ({install_hint()})")
    return found


def find_firmware(qemu: str | None = None) -> Path:
    """edk2 for aarch64: ``$FPVM_FIRMWARE``, then next to the QEMU binary's share dir, then the usual
    places."""
    override = os.environ.get("FPVM_FIRMWARE")
    if override:
        path = Path(override)
        if not path.is_file():
            raise MachineError(f"FPVM_FIRMWARE={override} does not exist")
        return path
    dirs: list[Path] = []
    if qemu:
        located = shutil.which(qemu) or qemu
        dirs.append(Path(located).resolve().parent.parent / "share" / "qemu")
    dirs.extend(Path(d) for d in FIRMWARE_DIRS)
    for d in dirs:
        for name in FIRMWARE_NAMES:
            candidate = d / name
            if candidate.is_file():
                return candidate
    raise MachineError(
        "no UEFI firmware for aarch64 found (looked for edk2-aarch64-code.fd, QEMU_EFI.fd, AAVMF_CODE.fd in "
        f"{', '.join(str(d) for d in dict.fromkeys(dirs))}): install it (brew install qemu; Debian/Ubuntu: "
        "apt install qemu-efi-aarch64) or set FPVM_FIRMWARE to the file"
    )


def ensure_efi_vars(path: Path) -> None:
    """The writable 64 MiB UEFI vars store pflash firmware needs; sparse, so unused it costs nothing."""
    if not path.exists():
        with path.open("wb") as fh:
            fh.truncate(PFLASH_SIZE)
