"""The /dev/io transport: the exact IODEV_PIO requests it sends (FreeBSD io(4), sys/dev/io/iodev.h).

FreeBSD is not available here, so a recording device stands in for /dev/io: it decodes each request
with the layout io(4) documents (``struct iodev_pio_req {u_int access, port, width, val}``), checks it
against QEMU's x86 fw_cfg ports, and answers from an in-memory fw_cfg.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from fwcfg_fake import Registers, directory

from fpvm.fwcfg import FwCfgError, NoDeviceError, devio, open_device
from fpvm.fwcfg.protocol import RegisterDevice, SignatureError


class RecordingIo:
    """Records (request, raw bytes in) for every ioctl and plays fw_cfg's ports 0x510/0x511."""

    def __init__(self, registers: Registers) -> None:
        self.registers = registers
        self.calls: list[tuple[int, bytes]] = []
        self.closed = False

    def ioctl(self, request: int, buf: bytearray) -> None:
        self.calls.append((request, bytes(buf)))
        assert len(buf) == 16
        access, port, width, value = struct.unpack("<4I", buf)
        if (access, port, width) == (1, 0x510, 2):
            self.registers.select(value)
        elif (access, port, width) == (0, 0x511, 1):
            struct.pack_into("<4I", buf, 0, access, port, width, self.registers.next_byte())
        else:
            raise AssertionError(f"unexpected port access {access, port, width, value}")

    def close(self) -> None:
        self.closed = True


def test_iodev_pio_number_follows_freebsd_ioccom() -> None:
    # sys/sys/ioccom.h: _IOWR(g, n, t) = IOC_INOUT | ((sizeof(t) & IOCPARM_MASK) << 16) | (g << 8) | n,
    # IOC_INOUT = 0x80000000 | 0x40000000; sizeof(struct iodev_pio_req) = 4 * sizeof(u_int) = 16.
    assert devio.PIO_REQ.size == 16
    assert devio.IODEV_PIO == 0xC0000000 | (16 << 16) | (ord("I") << 8) | 0 == 0xC0104900


def test_requests_are_the_documented_structures() -> None:
    recorder = RecordingIo(Registers(directory({"opt/com.coreos/config": b"{}"})))
    device = RegisterDevice(devio.DevIoTransport(recorder))
    assert device.read("opt/com.coreos/config") == b"{}"
    select_signature = struct.pack("<4I", 1, 0x510, 2, 0x0000)
    read_byte = struct.pack("<4I", 0, 0x511, 1, 0)
    assert recorder.calls[:5] == [(0xC0104900, select_signature)] + [(0xC0104900, read_byte)] * 4
    # Then the directory (4 + 64 bytes), then the entry: one select plus one ioctl per byte.
    assert recorder.calls[5] == (0xC0104900, struct.pack("<4I", 1, 0x510, 2, 0x0019))
    assert recorder.calls[-3] == (0xC0104900, struct.pack("<4I", 1, 0x510, 2, 0x0020))
    assert len(recorder.calls) == (1 + 4) + (1 + 4 + 64) + (1 + 2)
    device.close()
    assert recorder.closed


def test_wrong_signature_is_refused_and_closes_the_device() -> None:
    registers = Registers({0: b"\xff\xff\xff\xff"})
    recorder = RecordingIo(registers)
    with pytest.raises(SignatureError):
        RegisterDevice(devio.DevIoTransport(recorder))
    assert recorder.closed


def test_real_ioctl_failure_is_an_fwcfg_error(tmp_path: Path) -> None:
    """A node that is not /dev/io (here a plain file) rejects IODEV_PIO; that must not be a traceback."""
    plain = tmp_path / "io"
    plain.write_bytes(b"")
    with pytest.raises(FwCfgError, match=r"ioctl 0xc0104900 failed"):
        open_device(
            system="FreeBSD",
            machine="amd64",
            sysfs_root=tmp_path / "x",
            mount=tmp_path / "y",
            devio_path=str(plain),
        )


def test_missing_dev_io_is_reported(tmp_path: Path) -> None:
    with pytest.raises(NoDeviceError, match=r"/nonexistent/io not found"):
        open_device(
            system="FreeBSD",
            machine="amd64",
            sysfs_root=tmp_path,
            mount=tmp_path,
            devio_path="/nonexistent/io",
        )
