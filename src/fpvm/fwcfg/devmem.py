"""fw_cfg on FreeBSD/arm64 through /dev/mem: memory-mapped registers, no kernel module.

mem(4): ``/dev/mem`` is physical memory, byte offsets are physical addresses, and root may ``mmap(2)`` it;
on arm64 ``memmmap()`` (sys/arm64/arm64/mem.c) maps any physical offset, device registers included.

QEMU's MMIO fw_cfg (hw/nvram/fw_cfg.c, docs/specs/fw_cfg.rst): data register at base+0, selector at
base+8 (16 bits, big-endian), DMA at base+16; the window is 0x18 bytes. On the ``virt`` machine the base
is 0x09020000. The base is looked up rather than assumed (``find_base``): an explicit value or
``FPVM_FWCFG_MMIO_BASE``, then the device tree the kernel booted with (``sysctl -b hw.fdt.dtb``), then
the ACPI DSDT (``acpidump -o FILE``), then the ``virt`` default. The signature check that opening the
device performs is the final proof.

Accesses are single loads/stores of the register's width (one byte from data, one 16-bit store to the
selector) because a hypervisor traps them one by one: KVM on arm64 cannot emulate the paired or vector
loads a bulk ``memcpy`` may use on device memory.
"""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Protocol

from fpvm.fwcfg import acpi, fdt
from fpvm.fwcfg.protocol import NoDeviceError

DATA_OFFSET = 0
SELECTOR_OFFSET = 8
WINDOW_SIZE = 0x18
VIRT_BASE = 0x09020000
DEFAULT_PATH = "/dev/mem"
BASE_ENV = "FPVM_FWCFG_MMIO_BASE"


class Window(Protocol):
    """The fw_cfg registers as memory: offsets are relative to the device's base."""

    def load8(self, offset: int) -> int: ...

    def store16(self, offset: int, raw: bytes) -> None:
        """Store two bytes, in the order given, as one 16-bit access."""

    def close(self) -> None: ...


class MmapWindow:
    """The registers mapped from /dev/mem (mappings start on a page boundary)."""

    def __init__(self, base: int, path: str = DEFAULT_PATH, size: int = WINDOW_SIZE) -> None:
        page_base = base & ~(mmap.PAGESIZE - 1)
        self._delta = base - page_base
        length = self._delta + size
        length += length % 2  # a 16-bit view needs an even length
        try:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_SYNC", 0))
        except OSError as exc:
            raise NoDeviceError(f"cannot open {path}: {exc.strerror} (mem(4) needs root)") from None
        try:
            self._map = mmap.mmap(
                fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=page_base
            )
        except OSError as exc:
            raise NoDeviceError(f"cannot map {path} at {base:#x}: {exc.strerror}") from None
        finally:
            os.close(fd)
        self._view16 = memoryview(self._map).cast("H")

    def load8(self, offset: int) -> int:
        return self._map[self._delta + offset]

    def store16(self, offset: int, raw: bytes) -> None:
        index, odd = divmod(self._delta + offset, 2)
        if odd or len(raw) != 2:
            raise ValueError("16-bit stores must be aligned and 2 bytes")
        # Native order stores the bytes exactly as given, whatever the CPU's endianness.
        self._view16[index] = int.from_bytes(raw, sys.byteorder)

    def close(self) -> None:
        self._view16.release()
        self._map.close()


class DevMemTransport:
    """Selector and data registers reached through a memory window."""

    def __init__(self, window: Window, description: str) -> None:
        self.window = window
        self.description = description

    def select(self, key: int) -> None:
        self.window.store16(SELECTOR_OFFSET, key.to_bytes(2, "big"))

    def read(self, count: int) -> bytes:
        return bytes(self.window.load8(DATA_OFFSET) for _ in range(count))

    def close(self) -> None:
        self.window.close()


Runner = Callable[[list[str]], bytes | None]


def run_command(argv: list[str]) -> bytes | None:
    """stdout of a command, or None if it is missing or fails: each lookup is only a hint."""
    try:
        done = subprocess.run(argv, capture_output=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def base_from_dtb(run: Runner = run_command) -> int | None:
    blob = run(["sysctl", "-b", "hw.fdt.dtb"])
    if not blob:
        return None
    try:
        found = fdt.find_compatible_reg(blob)
    except fdt.FdtError:
        return None
    return found[0] if found else None


def base_from_acpi(run: Runner = run_command) -> int | None:
    with tempfile.TemporaryDirectory(prefix="fpvm-acpi.") as tmp:
        out = os.path.join(tmp, "dsdt")
        if run(["acpidump", "-o", out]) is None or not os.path.exists(out):
            return None
        with open(out, "rb") as handle:
            found = acpi.find_fwcfg(handle.read())
    if found and found[0] == "mmio":
        return found[1]
    return None


def find_base(explicit: int | None = None, run: Runner = run_command) -> tuple[int, str]:
    """(base, where it came from); the order is explained in the module docstring."""
    if explicit is not None:
        return explicit, "given"
    env = os.environ.get(BASE_ENV)
    if env:
        try:
            return int(env, 0), BASE_ENV
        except ValueError:
            raise NoDeviceError(f"{BASE_ENV}={env!r} is not a number") from None
    base = base_from_dtb(run)
    if base is not None:
        return base, "hw.fdt.dtb"
    base = base_from_acpi(run)
    if base is not None:
        return base, "ACPI DSDT"
    return VIRT_BASE, "QEMU virt default"


def open_transport(
    path: str = DEFAULT_PATH, base: int | None = None, run: Runner = run_command
) -> DevMemTransport:
    address, source = find_base(base, run)
    return DevMemTransport(MmapWindow(address, path), description=f"{path} at {address:#x} ({source})")
