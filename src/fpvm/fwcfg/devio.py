"""fw_cfg on FreeBSD/amd64 through /dev/io: port I/O from userland, no kernel module.

FreeBSD's io(4) (share/man/man4/io.4): root opens ``/dev/io`` and sends ``IODEV_PIO`` ioctls with a
``struct iodev_pio_req { u_int access; u_int port; u_int width; u_int val; }`` (sys/dev/io/iodev.h),
``access`` being ``IODEV_PIO_READ`` (0) or ``IODEV_PIO_WRITE`` (1) and ``width`` the operand size in
bytes; a read stores the result in ``val``. The kernel refuses the open unless the caller has PRIV_IO and
the securelevel is at most 0 (sys/dev/io/iodev.c, ``ioopen``).

``IODEV_PIO`` is ``_IOWR('I', 0, struct iodev_pio_req)``. sys/sys/ioccom.h defines
``_IOC(inout, group, num, len) = inout | ((len & IOCPARM_MASK) << 16) | (group << 8) | num`` with
``IOC_INOUT = IOC_IN | IOC_OUT = 0x80000000 | 0x40000000`` and ``IOCPARM_MASK = (1 << 13) - 1``; the struct
is four 32-bit ``u_int`` (16 bytes on amd64), so the number is
``0xC0000000 | (16 << 16) | (0x49 << 8) | 0 = 0xC0104900``. It is computed below, not hard-coded.

QEMU's x86 fw_cfg: selector at port 0x510 (a 16-bit write), data at 0x511 (8-bit reads only; QEMU rejects
wider reads of the data port). Every data byte is one ioctl, every selection one more.
"""

from __future__ import annotations

import fcntl
import os
import struct
from typing import Protocol

from fpvm.fwcfg.protocol import FwCfgError, NoDeviceError

IOCPARM_SHIFT = 13
IOCPARM_MASK = (1 << IOCPARM_SHIFT) - 1
IOC_OUT = 0x40000000
IOC_IN = 0x80000000
IOC_INOUT = IOC_IN | IOC_OUT

IODEV_PIO_READ = 0
IODEV_PIO_WRITE = 1
# u_int is 32 bits on every FreeBSD platform; "=" keeps Python from adding padding or using C long.
PIO_REQ = struct.Struct("=IIII")

SELECTOR_PORT = 0x510
DATA_PORT = 0x511
DEFAULT_PATH = "/dev/io"


def ioc(inout: int, group: str, num: int, length: int) -> int:
    """sys/sys/ioccom.h ``_IOC``: direction bits, parameter length, group letter, command number."""
    return inout | ((length & IOCPARM_MASK) << 16) | (ord(group) << 8) | num


IODEV_PIO = ioc(IOC_INOUT, "I", 0, PIO_REQ.size)


class IoctlDevice(Protocol):
    """An open device node that takes ioctls with an in/out buffer (the real /dev/io, or a recorder)."""

    def ioctl(self, request: int, buf: bytearray) -> None: ...

    def close(self) -> None: ...


class DevIo:
    """The real /dev/io node."""

    def __init__(self, path: str = DEFAULT_PATH) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise NoDeviceError(
                f"cannot open {path}: {exc.strerror} (io(4) needs root and securelevel <= 0)"
            ) from None

    def ioctl(self, request: int, buf: bytearray) -> None:
        try:
            fcntl.ioctl(self._fd, request, buf, True)
        except OSError as exc:
            raise FwCfgError(f"{self.path}: ioctl {request:#x} failed: {exc.strerror}") from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class DevIoTransport:
    """Selector and data ports driven by IODEV_PIO requests."""

    def __init__(self, device: IoctlDevice, description: str = DEFAULT_PATH) -> None:
        self.device = device
        self.description = description
        self._buf = bytearray(PIO_REQ.size)

    def _pio(self, access: int, port: int, width: int, value: int) -> int:
        PIO_REQ.pack_into(self._buf, 0, access, port, width, value)
        self.device.ioctl(IODEV_PIO, self._buf)
        result: int = PIO_REQ.unpack(self._buf)[3]
        return result

    def select(self, key: int) -> None:
        self._pio(IODEV_PIO_WRITE, SELECTOR_PORT, 2, key)

    def read(self, count: int) -> bytes:
        return bytes(self._pio(IODEV_PIO_READ, DATA_PORT, 1, 0) & 0xFF for _ in range(count))

    def close(self) -> None:
        self.device.close()


def open_transport(path: str = DEFAULT_PATH) -> DevIoTransport:
    return DevIoTransport(DevIo(path), description=f"{path} (port I/O)")
