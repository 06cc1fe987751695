"""Bounds checks of the protocol layer: a device is outside input and may answer anything.

The well-formed path is proven against QEMU in test_fwcfg_qemu.py; these are the malformed answers
QEMU will not produce on demand.
"""

from __future__ import annotations

import struct

import pytest
from fwcfg_fake import Registers, directory

from fpvm.fwcfg import EntryNotFoundError, FwCfgError
from fpvm.fwcfg.protocol import (
    DIR_ENTRY,
    MAX_FILES,
    RegisterDevice,
    check_name,
    parse_dir_count,
    parse_dir_entries,
    parse_features,
)


class FakeTransport:
    """Registers read through the Transport interface, with a cap on how much may be read."""

    description = "fake"

    def __init__(self, items: dict[int, bytes]) -> None:
        self.registers = Registers(items)
        self.bytes_read = 0

    def select(self, key: int) -> None:
        self.registers.select(key)

    def read(self, count: int) -> bytes:
        self.bytes_read += count
        return bytes(self.registers.next_byte() for _ in range(count))

    def close(self) -> None:
        pass


def _record(size: int, select: int, name: bytes) -> bytes:
    return struct.pack(">IHH", size, select, 0) + name


def test_count_beyond_the_key_space_is_refused_before_reading_it() -> None:
    items = directory({})
    items[0x19] = struct.pack(">I", 0xFFFFFFFF)
    transport = FakeTransport(items)
    device = RegisterDevice(transport)
    with pytest.raises(FwCfgError, match=f"claims 4294967295 entries, more than the {MAX_FILES} possible"):
        device.list()
    assert transport.bytes_read == 4 + 4  # signature and header only


def test_directory_shorter_than_its_count() -> None:
    with pytest.raises(FwCfgError, match="holds 64 bytes, 2 entries need 128"):
        parse_dir_entries(_record(1, 0x20, b"a".ljust(56, b"\0")), 2)


def test_name_without_nul_is_refused() -> None:
    with pytest.raises(FwCfgError, match="entry 0: name is not NUL-terminated"):
        parse_dir_entries(_record(1, 0x20, b"n" * 56), 1)


def test_empty_name_and_bad_select_are_refused() -> None:
    with pytest.raises(FwCfgError, match="empty name"):
        parse_dir_entries(_record(1, 0x20, bytes(56)), 1)
    with pytest.raises(FwCfgError, match=r"select key 0x0019 invalid"):
        parse_dir_entries(_record(1, 0x19, b"x".ljust(56, b"\0")), 1)


def test_absurd_size_is_refused_before_reading() -> None:
    items = directory({"opt/x": b""})
    items[0x19] = struct.pack(">I", 1) + _record(0xFFFFFFFF, 0x20, b"opt/x".ljust(56, b"\0"))
    transport = FakeTransport(items)
    device = RegisterDevice(transport)
    with pytest.raises(FwCfgError, match="4294967295 bytes, more than the 67108864-byte limit"):
        device.read("opt/x")
    assert transport.bytes_read == 4 + 4 + DIR_ENTRY.size


def test_header_and_feature_sizes() -> None:
    with pytest.raises(FwCfgError, match="header is 3 bytes"):
        parse_dir_count(b"\0\0\0")
    assert parse_features(b"\x03\0\0\0") == 3
    with pytest.raises(FwCfgError, match="bitmap is 2 bytes"):
        parse_features(b"\0\0")


@pytest.mark.parametrize("name", ["", "x" * 56, "a\0b"])
def test_names_fw_cfg_cannot_hold(name: str) -> None:
    with pytest.raises(FwCfgError, match="invalid fw_cfg entry name"):
        check_name(name)


def test_short_read_from_a_transport_is_an_error() -> None:
    class Short(FakeTransport):
        def read(self, count: int) -> bytes:
            return super().read(count)[:-1]

    with pytest.raises(FwCfgError, match="asked for 4 bytes, got 3"):
        RegisterDevice(Short(directory({})))


def test_missing_entry_and_directory_cache() -> None:
    transport = FakeTransport(directory({"opt/a": b"A", "opt/b": b"BB"}))
    device = RegisterDevice(transport)
    assert [(e.name, e.size, e.select) for e in device.list()] == [("opt/a", 1, 0x20), ("opt/b", 2, 0x21)]
    before = transport.bytes_read
    assert device.read("opt/b") == b"BB"
    assert transport.bytes_read == before + 2  # the directory is read once per device
    with pytest.raises(EntryNotFoundError):
        device.read("opt/c")
