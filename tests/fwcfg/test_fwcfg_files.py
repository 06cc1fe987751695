"""File-based views (Linux sysfs, a qemufwcfg mount) and the order in which open_device tries them.

Neither exists on this host (no qemu_fw_cfg module, no FreeBSD), so the trees are laid out in a
temporary directory exactly as their documentation describes them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fpvm.fwcfg import EntryNotFoundError, FwCfgError, NoDeviceError, open_device
from fpvm.fwcfg.qemufwcfg import MountDevice
from fpvm.fwcfg.sysfs import SysfsDevice

CONFIG = b'{"ignition":{"version":"3.2.0"}}'


def make_sysfs(root: Path, items: dict[int, tuple[str, bytes]]) -> Path:
    """Linux Documentation/ABI/testing/sysfs-firmware-qemu_fw_cfg: by_key/<key>/{key,name,size,raw};
    by_name/<name> (one directory per path component) symlinks to the by_key directory."""
    for key, (name, data) in items.items():
        item = root / "by_key" / str(key)
        item.mkdir(parents=True)
        (item / "key").write_text(f"{key}\n")
        (item / "name").write_text(f"{name}\n")
        (item / "size").write_text(f"{len(data)}\n")
        (item / "raw").write_bytes(data)
        link = root / "by_name" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(item, link.parent))
    return root


def test_sysfs_lists_and_reads(tmp_path: Path) -> None:
    root = make_sysfs(
        tmp_path / "qemu_fw_cfg", {32: ("bootorder", b""), 44: ("opt/com.coreos/config", CONFIG)}
    )
    device = SysfsDevice(root)
    assert [(e.name, e.size, e.select) for e in device.list()] == [
        ("bootorder", 0, 32),
        ("opt/com.coreos/config", len(CONFIG), 44),
    ]
    assert device.read("opt/com.coreos/config") == CONFIG
    with pytest.raises(EntryNotFoundError):
        device.read("opt/com.coreos/environment")
    with pytest.raises(EntryNotFoundError):
        device.read("opt/../../../etc/passwd")


def test_sysfs_size_limit(tmp_path: Path) -> None:
    root = make_sysfs(tmp_path / "qemu_fw_cfg", {44: ("opt/big", b"x" * 100)})
    with pytest.raises(FwCfgError, match="larger than the 10-byte limit"):
        SysfsDevice(root, max_size=10).read("opt/big")


def test_mount_lists_and_reads(tmp_path: Path) -> None:
    mount = tmp_path / "qemufwcfg"
    (mount / "opt" / "com.coreos").mkdir(parents=True)
    (mount / "opt" / "com.coreos" / "config").write_bytes(CONFIG)
    (mount / "bootorder").write_bytes(b"")
    device = MountDevice(mount)
    assert [(e.name, e.size, e.select) for e in device.list()] == [
        ("bootorder", 0, None),
        ("opt/com.coreos/config", len(CONFIG), None),
    ]
    assert device.read("opt/com.coreos/config") == CONFIG
    with pytest.raises(EntryNotFoundError):
        device.read("opt/../bootorder/..")


def test_unmounted_directory_is_not_a_device(tmp_path: Path) -> None:
    """The prototype's package creates /var/run/qemufwcfg; empty means nothing is mounted there."""
    (tmp_path / "qemufwcfg").mkdir()
    with pytest.raises(NoDeviceError, match="no qemufwcfg file system mounted"):
        MountDevice(tmp_path / "qemufwcfg")


def test_open_device_prefers_sysfs_then_the_mount(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path / "sysfs", {44: ("opt/com.coreos/config", b"from sysfs")})
    mount = tmp_path / "mount"
    (mount / "opt" / "com.coreos").mkdir(parents=True)
    (mount / "opt" / "com.coreos" / "config").write_bytes(b"from mount")
    assert open_device(sysfs_root=sysfs, mount=mount).read("opt/com.coreos/config") == b"from sysfs"
    assert open_device(sysfs_root=tmp_path / "no", mount=mount).read("opt/com.coreos/config") == b"from mount"


def test_open_device_without_any_device_says_what_it_tried(tmp_path: Path) -> None:
    with pytest.raises(NoDeviceError) as caught:
        open_device(sysfs_root=tmp_path / "a", mount=tmp_path / "b", system="Linux", machine="x86_64")
    message = str(caught.value)
    assert message.startswith("no fw_cfg device found: ")
    assert "qemu_fw_cfg module" in message
    assert "no qemufwcfg file system mounted" in message
    assert "use --qmp SOCKET" in message


def test_cli_group_without_action_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    from fpvm import cli

    assert cli.main(["debug", "fwcfg"]) == 2
    assert "usage: fpvm debug fwcfg [-h] [--qmp SOCKET] ACTION" in capsys.readouterr().err
    assert cli.main(["debug"]) == 2
