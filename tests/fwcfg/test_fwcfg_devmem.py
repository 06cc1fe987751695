"""The /dev/mem (arm64 MMIO) transport and how it finds the fw_cfg base.

No FreeBSD/arm64 here: a recording window checks the register offsets and byte order the transport
produces; the real ``mmap`` code runs against a plain file; the device-tree lookup runs on the DTB that
the real ``qemu-system-aarch64 -machine virt`` builds, and a paused virt machine confirms through QMP
that QEMU's signature sits at the base found there.
"""

from __future__ import annotations

import mmap
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fwcfg_fake import Registers, directory
from fwcfg_qemu import Qemu, hmp, start_qemu, stop_qemu

from fpvm.fwcfg import FwCfgError, NoDeviceError, acpi, devmem, fdt, open_device
from fpvm.fwcfg.protocol import RegisterDevice


class RecordingWindow:
    """Records every access; answers like QEMU's MMIO fw_cfg (data +0, big-endian selector +8)."""

    def __init__(self, registers: Registers) -> None:
        self.registers = registers
        self.calls: list[tuple[str, int, bytes | None]] = []
        self.closed = False

    def load8(self, offset: int) -> int:
        self.calls.append(("load8", offset, None))
        assert offset == 0
        return self.registers.next_byte()

    def store16(self, offset: int, raw: bytes) -> None:
        self.calls.append(("store16", offset, raw))
        assert offset == 8
        self.registers.select(int.from_bytes(raw, "big"))

    def close(self) -> None:
        self.closed = True


def test_selector_is_a_big_endian_store_at_8_and_data_is_read_at_0() -> None:
    window = RecordingWindow(Registers(directory({"opt/com.coreos/config": b'{"x":1}'})))
    device = RegisterDevice(devmem.DevMemTransport(window, "test"))
    assert device.read("opt/com.coreos/config") == b'{"x":1}'
    assert window.calls[0] == ("store16", 8, b"\x00\x00")
    assert window.calls[1:5] == [("load8", 0, None)] * 4
    assert window.calls[5] == ("store16", 8, b"\x00\x19")
    assert window.calls[-8] == ("store16", 8, b"\x00\x20")
    assert len(window.calls) == (1 + 4) + (1 + 4 + 64) + (1 + 7)
    device.close()
    assert window.closed


def test_mmap_window_maps_the_page_and_accesses_base_offsets(tmp_path: Path) -> None:
    """The real mmap path, on a file standing in for /dev/mem, with a base that is not page-aligned."""
    memory = tmp_path / "mem"
    memory.write_bytes(bytes(3 * mmap.PAGESIZE))
    base = mmap.PAGESIZE + 0x40
    with memory.open("r+b") as handle:
        handle.seek(base)
        handle.write(b"Q")
    window = devmem.MmapWindow(base, str(memory))
    assert window.load8(0) == ord("Q")
    window.store16(8, b"\x12\x34")
    window.close()
    data = memory.read_bytes()
    assert data[base + 8 : base + 10] == b"\x12\x34"
    assert data.count(0) == len(data) - 3


@pytest.fixture(scope="module")
def virt_dtb(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The device tree QEMU's arm64 ``virt`` machine hands its guest (``-machine virt,dumpdtb=FILE``)."""
    path = tmp_path_factory.mktemp("dtb") / "virt.dtb"
    subprocess.run(
        ["qemu-system-aarch64", "-machine", f"virt,dumpdtb={path}", "-nodefaults", "-display", "none"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path.read_bytes()


def test_device_tree_of_qemu_virt_gives_base_and_size(virt_dtb: bytes) -> None:
    assert fdt.find_compatible_reg(virt_dtb) == (0x09020000, 0x18)
    assert fdt.find_compatible_reg(virt_dtb, b"no,such-device") is None


def test_find_base_asks_sysctl_for_the_dtb_first(virt_dtb: bytes) -> None:
    asked: list[list[str]] = []

    def run(argv: list[str]) -> bytes | None:
        asked.append(argv)
        return virt_dtb

    # sysctl(8): "-b  Force the value of the variable(s) to be output in raw, binary format."
    assert devmem.find_base(run=run) == (0x09020000, "hw.fdt.dtb")
    assert asked == [["sysctl", "-b", "hw.fdt.dtb"]]


def _arm_fwcf_aml(base: int, length: int) -> bytes:
    """``Device (FWCF) { Name (_HID, "QEMU0002"); Name (_STA, 0x0B); Name (_CCA, One);
    Name (_CRS, ResourceTemplate () { Memory32Fixed (ReadWrite, base, length) }) }`` encoded per
    ACPI 6.5 chapters 20 (AML) and 6.4 (resource descriptors)."""
    memory32 = struct.pack("<BHBII", 0x86, 9, 1, base, length) + b"\x79\x00"  # + End Tag
    buffer = b"\x11" + bytes([2 + 2 + len(memory32)]) + b"\x0a" + bytes([len(memory32)]) + memory32
    body = (
        b"FWCF" + b"\x08_HID\x0dQEMU0002\x00" + b"\x08_STA\x0a\x0b" + b"\x08_CCA\x01" + b"\x08_CRS" + buffer
    )
    return b"DSDT" + bytes(32) + b"\x5b\x82" + bytes([1 + len(body)]) + body


def test_find_base_falls_back_to_acpidump_then_to_the_virt_default(tmp_path: Path) -> None:
    asked: list[list[str]] = []

    def run(argv: list[str]) -> bytes | None:
        asked.append(argv)
        if argv[0] == "acpidump":
            # acpidump(8): "-o dsdt_output  Store the DSDT data block from physical memory into the file."
            assert argv[1] == "-o"
            Path(argv[2]).write_bytes(_arm_fwcf_aml(0x09030000, 0x18))
            return b""
        return None  # hw.fdt.dtb absent: the guest booted with ACPI

    assert devmem.find_base(run=run) == (0x09030000, "ACPI DSDT")
    assert [argv[:2] for argv in asked] == [["sysctl", "-b"], ["acpidump", "-o"]]
    assert devmem.find_base(run=lambda argv: None) == (devmem.VIRT_BASE, "QEMU virt default")
    assert devmem.find_base(run=lambda argv: b"not a device tree") == (devmem.VIRT_BASE, "QEMU virt default")


def test_find_base_explicit_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(argv: list[str]) -> bytes | None:
        raise AssertionError(argv)

    assert devmem.find_base(0x1000, run=never) == (0x1000, "given")
    monkeypatch.setenv(devmem.BASE_ENV, "0x0a000000")
    assert devmem.find_base(run=never) == (0x0A000000, devmem.BASE_ENV)
    monkeypatch.setenv(devmem.BASE_ENV, "nowhere")
    with pytest.raises(NoDeviceError, match="not a number"):
        devmem.find_base(run=never)


def test_acpi_locator_reads_memory32fixed() -> None:
    assert acpi.find_fwcfg(_arm_fwcf_aml(0x09020000, 0x18)) == ("mmio", 0x09020000, 0x18)
    assert acpi.find_fwcfg(b"DSDT" + bytes(100)) is None


def test_open_device_on_freebsd_arm64_uses_dev_mem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The selection logic reaches /dev/mem; a file full of zeros there has the wrong signature."""
    memory = tmp_path / "mem"
    memory.write_bytes(bytes(2 * mmap.PAGESIZE))
    with pytest.raises(FwCfgError, match="signature is b'\\\\x00"):
        open_device(
            system="FreeBSD",
            machine="arm64",
            sysfs_root=tmp_path / "none",
            mount=tmp_path / "none",
            devmem_path=str(memory),
            mmio_base=mmap.PAGESIZE,
        )


@pytest.fixture(scope="module")
def arm_qemu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Qemu]:
    qemu = start_qemu("qemu-system-aarch64", "virt", tmp_path_factory.mktemp("qemu-arm"), {})
    try:
        yield qemu
    finally:
        stop_qemu(qemu.process)


@pytest.mark.slow
def test_qemu_virt_answers_QEMU_at_the_device_tree_base(arm_qemu: Qemu, virt_dtb: bytes) -> None:
    """HMP ``xp`` reads guest-physical memory, MMIO included: the data register at base+0 streams the
    signature selected at reset. (Writes to MMIO are not possible through QMP, so this is read-only.)"""
    found = fdt.find_compatible_reg(virt_dtb)
    assert found is not None
    answer = hmp(arm_qemu.qmp, f"xp /4xb {found[0] + devmem.DATA_OFFSET:#x}")
    assert answer.split(":")[1].split() == ["0x51", "0x45", "0x4d", "0x55"]  # "QEMU"


@pytest.mark.slow
def test_qmp_transport_refuses_machines_without_port_io(arm_qemu: Qemu) -> None:
    with pytest.raises(FwCfgError, match=r"needs an x86 machine .* this QEMU is aarch64"):
        open_device(arm_qemu.qmp)
