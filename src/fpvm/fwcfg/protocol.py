"""The fw_cfg register protocol, independent of how the registers are reached.

QEMU's fw_cfg device has two registers: a 16-bit *selector* and an 8-bit *data* register. Writing a key
to the selector rewinds a cursor to the start of that item; each data read returns the next byte. The
layout of the fixed items is in QEMU's docs/specs/fw_cfg.rst:

* key 0x0000 (signature) reads ``b"QEMU"``;
* key 0x0001 (id) is a little-endian u32 feature bitmap (bit 0: this traditional interface, bit 1: DMA);
* key 0x0019 (file directory) is a big-endian u32 count followed by that many 64-byte records
  ``{u32 size BE, u16 select BE, u16 reserved, char name[56]}``, names NUL-terminated.

A transport only has to select a key and read bytes (see ``Transport``); everything that interprets
those bytes lives here, so the QEMU-backed tests of one transport cover the parsing for all of them.
The device is untrusted input: every count and size is checked before it drives a loop or an allocation.
"""

from __future__ import annotations

import builtins
import struct
from dataclasses import dataclass
from typing import Protocol

SIGNATURE_KEY = 0x0000
ID_KEY = 0x0001
FILE_DIR_KEY = 0x0019
FILE_FIRST_KEY = 0x0020
# Keys with bit 14 set are writes, bit 15 marks architecture-specific items; file items lie below both.
KEY_LIMIT = 0x4000

SIGNATURE = b"QEMU"
FEATURE_TRADITIONAL = 1 << 0
FEATURE_DMA = 1 << 1

DIR_HEADER = struct.Struct(">I")
DIR_ENTRY = struct.Struct(">IHH56s")
NAME_SIZE = 56
MAX_FILES = KEY_LIMIT - FILE_FIRST_KEY
# Ignition configs are kilobytes; refuse anything that would take hours byte-by-byte or exhaust memory.
DEFAULT_MAX_SIZE = 64 * 1024 * 1024


class FwCfgError(Exception):
    """The device is absent, unreadable or returned something that is not a valid fw_cfg answer."""


class NoDeviceError(FwCfgError):
    """No fw_cfg device could be reached through the chosen transport."""


class SignatureError(FwCfgError):
    """Something answered at the fw_cfg registers, but not with QEMU's signature."""


class EntryNotFoundError(FwCfgError):
    """The device works but has no file item with the requested name."""


@dataclass(frozen=True)
class Entry:
    """One file item: ``select`` is its key, or ``None`` where a file-based view does not expose it."""

    name: str
    size: int
    select: int | None


class Transport(Protocol):
    """Raw register access: the only thing that differs between /dev/io, /dev/mem and QMP."""

    description: str

    def select(self, key: int) -> None: ...

    def read(self, count: int) -> bytes: ...

    def close(self) -> None: ...


class Device(Protocol):
    """What callers use, whether backed by registers or by a file tree (qemufwcfg mount, Linux sysfs)."""

    description: str

    def list(self) -> builtins.list[Entry]: ...

    def read(self, name: str) -> bytes: ...

    def close(self) -> None: ...


def check_name(name: str) -> None:
    """Reject names fw_cfg cannot hold, before any register traffic."""
    encoded = name.encode("utf-8")
    if not encoded or len(encoded) >= NAME_SIZE or b"\0" in encoded:
        raise FwCfgError(f"invalid fw_cfg entry name {name!r}: 1 to {NAME_SIZE - 1} bytes, no NUL")


def parse_signature(data: bytes) -> None:
    if data != SIGNATURE:
        raise SignatureError(
            f"fw_cfg signature is {data!r}, expected {SIGNATURE!r}: no QEMU fw_cfg device at these registers"
        )


def parse_features(data: bytes) -> int:
    if len(data) != 4:
        raise FwCfgError(f"fw_cfg feature bitmap is {len(data)} bytes, expected 4")
    return int.from_bytes(data, "little")


def parse_dir_count(data: bytes) -> int:
    """Validate the directory header; a bogus count must not make us read megabytes of registers."""
    if len(data) != DIR_HEADER.size:
        raise FwCfgError(f"fw_cfg file directory header is {len(data)} bytes, expected {DIR_HEADER.size}")
    count: int = DIR_HEADER.unpack(data)[0]
    if count > MAX_FILES:
        raise FwCfgError(f"fw_cfg file directory claims {count} entries, more than the {MAX_FILES} possible")
    return count


def parse_dir_entries(data: bytes, count: int) -> list[Entry]:
    """Decode ``count`` 64-byte records; ``data`` must hold exactly that many."""
    if len(data) != count * DIR_ENTRY.size:
        raise FwCfgError(
            f"fw_cfg file directory holds {len(data)} bytes, {count} entries need {count * DIR_ENTRY.size}"
        )
    entries: list[Entry] = []
    for index in range(count):
        size, select, _reserved, raw_name = DIR_ENTRY.unpack_from(data, index * DIR_ENTRY.size)
        end = raw_name.find(b"\0")
        if end < 0:
            raise FwCfgError(f"fw_cfg file directory entry {index}: name is not NUL-terminated")
        if end == 0:
            raise FwCfgError(f"fw_cfg file directory entry {index}: empty name")
        try:
            name = raw_name[:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FwCfgError(f"fw_cfg file directory entry {index}: name is not UTF-8 ({exc})") from None
        if not FILE_FIRST_KEY <= select < KEY_LIMIT:
            raise FwCfgError(
                f"fw_cfg file directory entry {index} ({name}): select key {select:#06x} invalid"
            )
        entries.append(Entry(name=name, size=size, select=select))
    return entries


def find_entry(entries: list[Entry], name: str) -> Entry:
    for entry in entries:
        if entry.name == name:
            return entry
    raise EntryNotFoundError(f"fw_cfg has no entry named {name!r}")


def check_size(entry: Entry, max_size: int) -> None:
    if entry.size > max_size:
        raise FwCfgError(
            f"fw_cfg entry {entry.name!r} is {entry.size} bytes, more than the {max_size}-byte limit"
        )


def read_exact(transport: Transport, count: int) -> bytes:
    """Transports must return exactly what was asked; a short read means the device went away."""
    data = transport.read(count)
    if len(data) != count:
        raise FwCfgError(f"{transport.description}: asked for {count} bytes, got {len(data)}")
    return data


class RegisterDevice:
    """fw_cfg through its registers: the signature is checked when the device is opened."""

    def __init__(self, transport: Transport, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.transport = transport
        self.description = transport.description
        self.max_size = max_size
        self._entries: builtins.list[Entry] | None = None
        try:
            transport.select(SIGNATURE_KEY)
            parse_signature(read_exact(transport, len(SIGNATURE)))
        except BaseException:
            transport.close()
            raise

    def features(self) -> int:
        self.transport.select(ID_KEY)
        return parse_features(read_exact(self.transport, 4))

    def list(self) -> builtins.list[Entry]:
        if self._entries is None:
            self.transport.select(FILE_DIR_KEY)
            count = parse_dir_count(read_exact(self.transport, DIR_HEADER.size))
            body = read_exact(self.transport, count * DIR_ENTRY.size)
            self._entries = parse_dir_entries(body, count)
        return list(self._entries)

    def read(self, name: str) -> bytes:
        check_name(name)
        entry = find_entry(self.list(), name)
        check_size(entry, self.max_size)
        assert entry.select is not None
        self.transport.select(entry.select)
        return read_exact(self.transport, entry.size)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> RegisterDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
