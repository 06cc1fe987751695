"""Find the fw_cfg MMIO window in a flattened device tree (DTB).

QEMU's ARM ``virt`` machine describes fw_cfg as a node ``fw-cfg@9020000`` with
``compatible = "qemu,fw-cfg-mmio"`` and ``reg = <base size>`` in the root's address/size cells. On
FreeBSD the kernel exports the DTB it booted with as the opaque sysctl ``hw.fdt.dtb`` (sys/dev/ofw/
ofw_fdt.c, registered only when an FDT is in use), which ``sysctl -b hw.fdt.dtb`` prints raw.

The format (devicetree specification, chapter 5) is a big-endian header, then a token stream:
BEGIN_NODE name, PROP len nameoff value, END_NODE, NOP, END. Only what finding one node needs is
decoded; every offset is checked because the blob comes from outside.
"""

from __future__ import annotations

import struct

MAGIC = 0xD00DFEED
HEADER = struct.Struct(">10I")
BEGIN_NODE, END_NODE, PROP, NOP, END = 1, 2, 3, 4, 9
FW_CFG_COMPATIBLE = b"qemu,fw-cfg-mmio"
# Devicetree spec 2.3.5: defaults when a node does not say.
DEFAULT_ADDRESS_CELLS, DEFAULT_SIZE_CELLS = 2, 1


class FdtError(ValueError):
    """The blob is not a valid flattened device tree."""


def _align4(offset: int) -> int:
    return (offset + 3) & ~3


def _cells(data: bytes, count: int, offset: int) -> int:
    value = 0
    for index in range(count):
        value = (value << 32) | struct.unpack_from(">I", data, offset + 4 * index)[0]
    return value


def find_compatible_reg(blob: bytes, compatible: bytes = FW_CFG_COMPATIBLE) -> tuple[int, int] | None:
    """(base, size) of the first node whose ``compatible`` list holds ``compatible``, or None."""
    if len(blob) < HEADER.size:
        raise FdtError("device tree blob shorter than its header")
    magic, total, off_struct, off_strings, _rsv, _ver, _last, _cpu, size_strings, size_struct = (
        HEADER.unpack_from(blob)
    )
    if magic != MAGIC:
        raise FdtError(f"bad device tree magic {magic:#x}")
    if total > len(blob) or off_struct + size_struct > total or off_strings + size_strings > total:
        raise FdtError("device tree header points outside the blob")
    structure = blob[off_struct : off_struct + size_struct]
    strings = blob[off_strings : off_strings + size_strings]

    # One frame per open node: its own props; the parent's cells decide how its reg is read.
    stack: list[dict[str, bytes]] = []
    pos = 0
    while pos + 4 <= len(structure):
        (token,) = struct.unpack_from(">I", structure, pos)
        pos += 4
        if token == BEGIN_NODE:
            end = structure.find(b"\0", pos)
            if end < 0:
                raise FdtError("unterminated node name")
            pos = _align4(end + 1)
            stack.append({})
        elif token == PROP:
            if pos + 8 > len(structure) or not stack:
                raise FdtError("property outside a node or truncated")
            length, nameoff = struct.unpack_from(">II", structure, pos)
            pos += 8
            if pos + length > len(structure) or nameoff >= len(strings):
                raise FdtError("property runs past the structure block")
            name_end = strings.find(b"\0", nameoff)
            if name_end < 0:
                raise FdtError("unterminated property name")
            stack[-1][strings[nameoff:name_end].decode("ascii", "replace")] = structure[pos : pos + length]
            pos = _align4(pos + length)
        elif token == END_NODE:
            if not stack:
                raise FdtError("END_NODE without a node")
            node = stack.pop()
            if compatible in node.get("compatible", b"").split(b"\0") and "reg" in node:
                parent = stack[-1] if stack else {}
                address_cells = _read_u32(parent, "#address-cells", DEFAULT_ADDRESS_CELLS)
                size_cells = _read_u32(parent, "#size-cells", DEFAULT_SIZE_CELLS)
                reg = node["reg"]
                if len(reg) < 4 * (address_cells + size_cells):
                    raise FdtError("fw_cfg reg property too short for its cells")
                return _cells(reg, address_cells, 0), _cells(reg, size_cells, 4 * address_cells)
        elif token == NOP:
            continue
        elif token == END:
            return None
        else:
            raise FdtError(f"unknown device tree token {token}")
    raise FdtError("device tree structure block ends without END")


def _read_u32(props: dict[str, bytes], name: str, default: int) -> int:
    value = props.get(name)
    if value is None:
        return default
    if len(value) != 4:
        raise FdtError(f"{name} is {len(value)} bytes, expected 4")
    cells: int = struct.unpack(">I", value)[0]
    if cells > 4:
        raise FdtError(f"{name} = {cells} is not plausible")
    return cells
