"""fw_cfg read back from a real QEMU 7.2 (x86 ``pc``, TCG, paused) through the QMP transport.

The protocol layer (signature, feature bitmap, directory, select-and-read) is shared by every register
transport, so these reads also prove the parsing that /dev/io and /dev/mem rely on. QEMU spends about
half a millisecond per HMP command and a byte costs one command: the module starts one QEMU with every
entry and keeps the number of bytes read to what the checks need.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fwcfg_qemu import FIXTURE_PREFIX, Qemu, ignition_not_in_repo, start_qemu, stop_qemu

from fpvm.contract import FWCFG_CONFIG as COREOS_CONFIG
from fpvm.fwcfg import (
    EntryNotFoundError,
    FwCfgError,
    acpi,
    open_device,
    protocol,
)
from fpvm.fwcfg.protocol import RegisterDevice
from fpvm_support import podman_ignition_configs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def x86_qemu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Qemu]:
    """x86 ``pc`` given, all at once: a config generated now as opt/com.coreos/config, every podman
    fixture, an empty file and 64 KiB of random bytes."""
    workdir = tmp_path_factory.mktemp("qemu-x86")
    files: dict[str, Path] = {}
    config = workdir / "config.ign"
    config.write_bytes(ignition_not_in_repo())
    files[COREOS_CONFIG] = config
    for path in podman_ignition_configs():
        prefix = "capture-" if path.parent.name.endswith("capture") else ""
        files[FIXTURE_PREFIX + prefix + path.name] = path
    (workdir / "empty").write_bytes(b"")
    files["opt/fpvm/empty"] = workdir / "empty"
    (workdir / "64k").write_bytes(os.urandom(64 * 1024))
    files["opt/fpvm/64k"] = workdir / "64k"
    qemu = start_qemu("qemu-system-x86_64", "pc", workdir, files)
    try:
        yield qemu
    finally:
        stop_qemu(qemu.process)


@pytest.fixture(scope="module")
def device(x86_qemu: Qemu) -> Iterator[RegisterDevice]:
    """One QMP connection for the whole module: the directory (~1.7 KB, ~1.5 s) is read once."""
    opened = open_device(x86_qemu.qmp)
    assert isinstance(opened, RegisterDevice)
    try:
        yield opened
    finally:
        opened.close()


def test_directory_lists_every_entry_qemu_was_given(x86_qemu: Qemu, device: RegisterDevice) -> None:
    features = device.features()
    listed = {entry.name: entry for entry in device.list()}
    # QEMU 7.2's pc machine offers the traditional interface and DMA (docs/specs/fw_cfg.rst, FW_CFG_ID).
    assert features & protocol.FEATURE_TRADITIONAL
    assert features & protocol.FEATURE_DMA
    for name, data in x86_qemu.entries.items():
        assert listed[name].size == len(data), name
        assert listed[name].select is not None
        assert protocol.FILE_FIRST_KEY <= listed[name].select < protocol.KEY_LIMIT
    assert "etc/acpi/tables" in listed  # QEMU's own items are listed too
    assert len({entry.select for entry in listed.values()}) == len(listed)


def test_every_podman_fixture_reads_back_byte_for_byte(x86_qemu: Qemu, device: RegisterDevice) -> None:
    names = [name for name in x86_qemu.entries if name.startswith(FIXTURE_PREFIX)]
    assert len(names) == len(podman_ignition_configs()) >= 7
    different = [name for name in names if device.read(name) != x86_qemu.entries[name]]
    assert different == []


def test_64k_entry_reads_back_byte_for_byte(x86_qemu: Qemu, device: RegisterDevice) -> None:
    data = device.read("opt/fpvm/64k")
    assert len(data) == 64 * 1024
    assert data == x86_qemu.entries["opt/fpvm/64k"]


def test_empty_entry_and_alternating_entries(x86_qemu: Qemu, device: RegisterDevice) -> None:
    """Each selection rewinds: reading A, B, A again gives whole entries, not continuations."""
    assert device.read("opt/fpvm/empty") == b""
    first = device.read(COREOS_CONFIG)
    other = device.read(FIXTURE_PREFIX + "HEAD-qemu.ign")
    again = device.read(COREOS_CONFIG)
    assert first == again == x86_qemu.entries[COREOS_CONFIG]
    assert other == x86_qemu.entries[FIXTURE_PREFIX + "HEAD-qemu.ign"]


def test_missing_entry_is_an_error(device: RegisterDevice) -> None:
    with pytest.raises(EntryNotFoundError, match="no entry named 'opt/fpvm/absent'"):
        device.read("opt/fpvm/absent")


def test_entry_larger_than_the_limit_is_refused(device: RegisterDevice) -> None:
    limited = RegisterDevice(device.transport, max_size=1024)  # same connection, new limit
    with pytest.raises(FwCfgError, match="65536 bytes, more than the 1024-byte limit"):
        limited.read("opt/fpvm/64k")


def test_acpi_locator_finds_the_x86_fw_cfg_ports_in_qemus_dsdt(device: RegisterDevice) -> None:
    """QEMU's own DSDT (from the etc/acpi/tables item: FACS, then DSDT) names FWCF at I/O port 0x510."""
    tables = protocol.find_entry(device.list(), "etc/acpi/tables")
    assert tables.select is not None
    device.transport.select(tables.select)
    dsdt = b""
    for _ in range(4):
        header = device.transport.read(8)
        body = device.transport.read(int.from_bytes(header[4:], "little") - 8)
        if header[:4] == b"DSDT":
            dsdt = header + body
            break
    assert dsdt, "no DSDT among the first tables"
    # FW_CFG_CTL_SIZE rounded to 4, plus the 8-byte DMA address register: 12 ports.
    assert acpi.find_fwcfg(dsdt) == ("io", 0x510, 12)
