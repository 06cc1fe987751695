"""Find fw_cfg's registers in ACPI AML, for guests that boot with ACPI instead of a device tree.

QEMU's DSDT declares ``Device (FWCF) { Name (_HID, "QEMU0002") ... Name (_CRS, ResourceTemplate () {...}) }``:
on x86 the resource is ``IO (Decode16, 0x0510, 0x0510, 0x01, 0x0C)``, on ARM ``virt`` it is
``Memory32Fixed (ReadWrite, 0x09020000, 0x00000018)``. Decoding AML properly needs an interpreter; the
_HID string followed closely by one of these two small resource descriptors (ACPI 6.5, 6.4.2.5 I/O Port
Descriptor, tag 0x47; 6.4.3.4 32-Bit Fixed Memory Range Descriptor, tag 0x86 length 9) is specific enough,
and the caller confirms the result by reading the signature.

On FreeBSD ``acpidump -o FILE`` stores the DSDT (and SSDTs) read from physical memory (acpidump(8)).
"""

from __future__ import annotations

import struct

HID = b"QEMU0002"
# How far after the _HID the _CRS may sit: QEMU puts _STA/_CCA in between, well under this.
WINDOW = 256
IO_DESCRIPTOR = struct.Struct("<BBHHBB")  # tag 0x47, info, min, max, alignment, length
MEM32_FIXED = struct.Struct("<BHBII")  # tag 0x86, length 9, info, base, length


def find_fwcfg(aml: bytes) -> tuple[str, int, int] | None:
    """("io" | "mmio", base, length) of the first QEMU0002 device, or None if the tables lack one."""
    start = aml.find(HID)
    while start >= 0:
        window = aml[start + len(HID) : start + len(HID) + WINDOW]
        for pos in range(len(window)):
            tag = window[pos]
            if tag == 0x86 and pos + MEM32_FIXED.size <= len(window):
                _tag, length, _info, base, size = MEM32_FIXED.unpack_from(window, pos)
                if length == 9 and size:
                    return "mmio", base, size
            if tag == 0x47 and pos + IO_DESCRIPTOR.size <= len(window):
                _tag, info, low, high, _align, size = IO_DESCRIPTOR.unpack_from(window, pos)
                if info in (0, 1) and low == high and size:
                    return "io", low, size
        start = aml.find(HID, start + 1)
    return None
