"""QEMU fw_cfg: the protocol and the transports that reach the device. Standard library only.

podman's QEMU provider hands the Ignition config to the VM as the fw_cfg item ``opt/com.coreos/config``.
FreeBSD has no fw_cfg driver in base, but the registers are simple enough to drive from userland as
root, so the guest needs no kernel module. ``open_device()`` picks the first transport that works:

1. ``qmp=SOCKET``: a running x86 QEMU's QMP socket (host-side debugging, tests);
2. Linux ``/sys/firmware/qemu_fw_cfg`` (the kernel driver's view);
3. a mounted qemufwcfg file system (the 2023 prototype's kernel module + FUSE);
4. FreeBSD/amd64 ``/dev/io`` port I/O; FreeBSD/arm64 ``/dev/mem`` MMIO.

Each returns a device with ``list() -> list[Entry]``, ``read(name) -> bytes`` and ``close()``, and raises
``FwCfgError`` (or a subclass) when the device or the entry is absent.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from fpvm.fwcfg.protocol import (
    DEFAULT_MAX_SIZE,
    Device,
    Entry,
    EntryNotFoundError,
    FwCfgError,
    NoDeviceError,
    RegisterDevice,
    SignatureError,
)

__all__ = [
    "Device",
    "Entry",
    "EntryNotFoundError",
    "FwCfgError",
    "NoDeviceError",
    "SignatureError",
    "open_device",
]


def _machine() -> str:
    return platform.machine().lower()


def open_device(
    qmp: str | None = None,
    *,
    sysfs_root: str | Path | None = None,
    mount: str | Path | None = None,
    devio_path: str | None = None,
    devmem_path: str | None = None,
    mmio_base: int | None = None,
    system: str | None = None,
    machine: str | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Device:
    """The first transport that answers; the paths exist so tests and unusual layouts can redirect them.

    ``system``/``machine`` default to this host's (``platform.system()``, ``platform.machine()``) and
    decide which register transport is tried after the file-based ones.
    """
    if qmp is not None:
        from fpvm.fwcfg.qmp import QmpTransport

        return RegisterDevice(QmpTransport(qmp), max_size=max_size)

    tried: list[str] = []

    from fpvm.fwcfg.sysfs import DEFAULT_ROOT, SysfsDevice

    try:
        return SysfsDevice(sysfs_root or DEFAULT_ROOT, max_size=max_size)
    except NoDeviceError as exc:
        tried.append(str(exc))

    from fpvm.fwcfg.qemufwcfg import DEFAULT_MOUNT, MountDevice

    try:
        return MountDevice(mount or DEFAULT_MOUNT, max_size=max_size)
    except NoDeviceError as exc:
        tried.append(str(exc))

    system = (system or platform.system()).lower()
    machine = (machine or _machine()).lower()
    if system == "freebsd" and machine in ("amd64", "x86_64", "i386"):
        from fpvm.fwcfg import devio

        path = devio_path or devio.DEFAULT_PATH
        if os.path.exists(path):
            return RegisterDevice(devio.open_transport(path), max_size=max_size)
        tried.append(f"{path} not found (kernel without `device io`?)")
    elif system == "freebsd" and machine in ("arm64", "aarch64"):
        from fpvm.fwcfg import devmem

        path = devmem_path or devmem.DEFAULT_PATH
        if os.path.exists(path):
            return RegisterDevice(devmem.open_transport(path, mmio_base), max_size=max_size)
        tried.append(f"{path} not found")
    else:
        tried.append(f"no register transport for {system}/{machine} (use --qmp SOCKET on a host)")
    raise NoDeviceError("no fw_cfg device found: " + "; ".join(tried))
