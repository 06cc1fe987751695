"""An in-memory fw_cfg register model, built from the spec, for tests that cannot reach QEMU's device.

It answers like the device does (selecting rewinds, reads past the end return 0) so the /dev/io and
/dev/mem tests can check the exact requests those transports issue while the shared protocol layer
reads real-looking data. The QEMU-backed tests check the same protocol against the real device.
"""

from __future__ import annotations

import struct


def directory(files: dict[str, bytes], first_key: int = 0x20) -> dict[int, bytes]:
    """Items as QEMU lays them out: signature, id (traditional interface only), directory, files."""
    items = {0x0000: b"QEMU", 0x0001: (1).to_bytes(4, "little")}
    body = struct.pack(">I", len(files))
    for index, (name, data) in enumerate(files.items()):
        items[first_key + index] = data
        body += struct.pack(">IHH56s", len(data), first_key + index, 0, name.encode())
    items[0x0019] = body
    return items


class Registers:
    """Selector/data semantics shared by the fake port and memory devices."""

    def __init__(self, items: dict[int, bytes]) -> None:
        self.items = items
        self.key = 0
        self.cursor = 0

    def select(self, key: int) -> None:
        self.key, self.cursor = key, 0

    def next_byte(self) -> int:
        data = self.items.get(self.key, b"")
        value = data[self.cursor] if self.cursor < len(data) else 0
        self.cursor += 1
        return value
