"""A fw_cfg directory that advertises a 4 GiB config: the read is refused from the directory entry
alone, and the agent's config search reports it and goes on to the next source (issue 16).

The protocol layer's own check is in test_fwcfg_protocol.py; this drives it through
``fpvm.guest.configsource.find_sources`` the way the boot does, over the fake registers.
"""

from __future__ import annotations

import struct
from pathlib import Path

from fwcfg_fake import directory
from test_fwcfg_protocol import FakeTransport

from fpvm.fwcfg.protocol import DEFAULT_MAX_SIZE, DIR_ENTRY, RegisterDevice
from fpvm.guest.configsource import MAX_CONFIG_BYTES, Probe, find_sources
from fpvm.guest.context import Log

CFG = "opt/com.coreos/config"
ENV = "opt/com.coreos/environment"


def test_device_cap_is_the_agents_config_cap() -> None:
    assert DEFAULT_MAX_SIZE == MAX_CONFIG_BYTES


def test_4_gib_config_entry_is_capped_and_the_boot_goes_on(tmp_path: Path) -> None:
    items = directory({CFG: b"", ENV: b"aHR0cF9wcm94eT0iaCI="})
    body = bytearray(items[0x19])
    # Entry 0 (the config) now claims 4 GiB - 1 bytes; its data item stays empty.
    body[4:8] = struct.pack(">I", 0xFFFFFFFF)
    items[0x19] = bytes(body)
    transport = FakeTransport(items)
    mount = tmp_path / "qemufwcfg"
    (mount / "opt/com.coreos").mkdir(parents=True)
    (mount / CFG).write_bytes(b'{"ignition":{"version":"3.4.0"}}')
    log = Log()
    out = find_sources(
        fwcfg_opener=lambda: RegisterDevice(transport), qemufwcfg_mount=str(mount), probe=Probe(), log=log
    )
    first = out.attempts[0]
    assert (first.source, first.status) == (f"fw_cfg {CFG}", "error")
    assert "4294967295 bytes, more than the 67108864-byte limit" in first.detail
    # Signature, directory header and both entries, then the environment entry: never the 4 GiB.
    assert transport.bytes_read == 4 + 4 + 2 * DIR_ENTRY.size + len(b"aHR0cF9wcm94eT0iaCI=")
    assert out.config == b'{"ignition":{"version":"3.4.0"}}'
    assert out.config_origin == f"qemufwcfg {mount / CFG}"
    assert out.environment == b"aHR0cF9wcm94eT0iaCI="
    assert sum("4294967295" in line for line in log.lines) == 1
