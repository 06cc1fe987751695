"""Config sources: order, fallbacks, logging, and the providers that cannot be read yet.

fw_cfg itself is tested against real QEMU by the fwcfg area; here a fake device raising the fwcfg
package's own exceptions stands in for it, and a directory laid out like a qemufwcfg mount
(``<mount>/opt/com.coreos/config``) for the FUSE file system.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from fpvm.fwcfg.protocol import EntryNotFoundError, FwCfgError, NoDeviceError
from fpvm.guest import configsource
from fpvm.guest.configsource import Probe, find_sources
from fpvm.guest.context import Log
from fpvm.guest.rootfs import RootFS


class FakeDevice:
    def __init__(self, entries: dict[str, bytes]) -> None:
        self.entries = entries
        self.closed = False

    def read(self, name: str) -> bytes:
        if name not in self.entries:
            raise EntryNotFoundError(f"fw_cfg has no entry named {name!r}")
        return self.entries[name]

    def close(self) -> None:
        self.closed = True


def no_device() -> FakeDevice:
    raise NoDeviceError("no fw_cfg device at /dev/io")


def qemufwcfg_dir(tmp_path: Path, entries: dict[str, bytes]) -> str:
    mount = tmp_path / "qemufwcfg"
    for name, data in entries.items():
        (mount / name).parent.mkdir(parents=True, exist_ok=True)
        (mount / name).write_bytes(data)
    mount.mkdir(exist_ok=True)
    return str(mount)


def quiet_probe() -> Probe:
    return Probe(None, lambda argv: None)


CFG = "opt/com.coreos/config"
ENV = "opt/com.coreos/environment"


def test_config_file_first_environment_still_from_fwcfg(tmp_path: Path) -> None:
    f = tmp_path / "c.ign"
    f.write_bytes(b"{from file}")
    dev = FakeDevice({CFG: b"{from fwcfg}", ENV: b"aHR0cF9wcm94eT0iaCI="})
    log = Log()
    out = find_sources(config_file=str(f), fwcfg_opener=lambda: dev, qemufwcfg_mount=None, log=log)
    assert out.config == b"{from file}"
    assert out.config_origin == f"--config {f}"
    assert out.environment == b"aHR0cF9wcm94eT0iaCI="
    assert [a.source for a in out.attempts] == [f"--config {f}", f"fw_cfg {ENV}"]
    assert dev.closed
    assert any("config source --config" in line for line in log.lines)


def test_fwcfg_device_before_qemufwcfg_mount(tmp_path: Path) -> None:
    mount = qemufwcfg_dir(tmp_path, {CFG: b"{mount}", ENV: b"bW91bnQ="})
    dev = FakeDevice({CFG: b"{device}"})
    out = find_sources(fwcfg_opener=lambda: dev, qemufwcfg_mount=mount, probe=quiet_probe())
    assert out.config == b"{device}"
    assert out.config_origin == f"fw_cfg {CFG}"
    # The device has no environment entry: the mount is tried next and has one.
    assert out.environment == b"bW91bnQ="
    assert out.environment_origin == f"qemufwcfg {mount}/{ENV}"
    assert [(a.source, a.status) for a in out.attempts] == [
        (f"fw_cfg {CFG}", "found"),
        (f"fw_cfg {ENV}", "absent"),
        (f"qemufwcfg {mount}/{ENV}", "found"),
    ]


def test_no_device_falls_back_to_mount(tmp_path: Path) -> None:
    mount = qemufwcfg_dir(tmp_path, {CFG: b"{mount}"})
    log = Log()
    out = find_sources(fwcfg_opener=no_device, qemufwcfg_mount=mount, probe=quiet_probe(), log=log)
    assert out.config == b"{mount}"
    assert out.environment is None
    assert [(a.source, a.status) for a in out.attempts] == [
        ("fw_cfg device", "absent"),
        (f"qemufwcfg {mount}/{CFG}", "found"),
        (f"qemufwcfg {mount}/{ENV}", "absent"),
    ]
    assert log.warnings == 0  # an absent source is normal, not a warning


def test_broken_device_is_an_error_not_a_crash(tmp_path: Path) -> None:
    class Broken(FakeDevice):
        def read(self, name: str) -> bytes:
            raise FwCfgError("data register returned garbage")

    log = Log()
    out = find_sources(fwcfg_opener=lambda: Broken({}), qemufwcfg_mount=None, probe=quiet_probe(), log=log)
    assert out.config is None
    assert ("fw_cfg " + CFG, "error") in [(a.source, a.status) for a in out.attempts]
    assert log.warnings >= 1
    assert out.summary() == "no config source found"


def test_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        find_sources(config_file=str(tmp_path / "missing.ign"), fwcfg_opener=None, qemufwcfg_mount=None)


def freebsd_probe(answers: dict[tuple[str, ...], str]) -> Probe:
    def query(argv: Sequence[str]) -> str | None:
        return answers.get(tuple(argv))

    return Probe(None, query)


def test_hyperv_detected_from_sysctl() -> None:
    probe = freebsd_probe({("/sbin/sysctl", "-n", "kern.vm_guest"): "hv"})
    out = find_sources(fwcfg_opener=no_device, qemufwcfg_mount=None, probe=probe)
    assert out.config is None
    assert [a.source for a in out.unsupported] == ["hyperv KVP (ignition.config.N)"]
    assert "kern.vm_guest=hv" in out.unsupported[0].detail
    assert out.summary().startswith("no config: hyperv KVP")


def test_vsock_detected_from_pciconf() -> None:
    # pciconf -l lines as FreeBSD prints them for a function without a driver.
    pciconf = (
        "hostb0@pci0:0:0:0:\tclass=0x060000 rev=0x00 hdr=0x00 vendor=0x8086 device=0x1237 subvendor=0x1af4\n"
        "none0@pci0:0:5:0:\tclass=0x088000 rev=0x01 hdr=0x00 vendor=0x1af4 device=0x1053 subvendor=0x1af4"
        " subdevice=0x1100\n"
    )
    probe = freebsd_probe(
        {("/usr/sbin/pciconf", "-l"): pciconf, ("/sbin/sysctl", "-n", "kern.vm_guest"): "kvm"}
    )
    out = find_sources(fwcfg_opener=no_device, qemufwcfg_mount=None, probe=probe)
    assert [a.source for a in out.unsupported] == ["applehv/libkrun vsock (CID 2 port 1024)"]
    assert "no virtio-vsock driver" in out.unsupported[0].detail


def test_linux_sysfs_probe(tmp_path: Path) -> None:
    dmi = tmp_path / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    (dmi / "sys_vendor").write_text("Microsoft Corporation\n")
    (dmi / "product_name").write_text("Virtual Machine\n")
    dev = tmp_path / "sys/bus/pci/devices/0000:00:05.0"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text("0x1af4\n")
    (dev / "device").write_text("0x1053\n")
    probe = Probe(RootFS(tmp_path), lambda argv: None)
    found = configsource.detect_unsupported(probe)
    assert [a.source.split()[0] for a in found] == ["hyperv", "applehv/libkrun"]


def test_recording_runner_asks_nothing(tmp_path: Path) -> None:
    from fpvm.guest.runner import RecordingRunner

    runner = RecordingRunner(None)
    probe = Probe.from_runner(RootFS(tmp_path), runner)
    assert configsource.detect_unsupported(probe) == []
    assert runner.commands == []


# -- Hyper-V KVP (pool files laid out as tests/guest/test_kvp.py documents) ---------------------------
def hyperv_probe(root: Path) -> Probe:
    return Probe(
        RootFS(root), lambda argv: "hv" if list(argv) == ["/sbin/sysctl", "-n", "kern.vm_guest"] else None
    )


def test_hyperv_config_read_from_kvp_pool(tmp_path: Path) -> None:
    from test_kvp import podman_dice, pool_bytes, write_pool

    config = (Path(__file__).parent / "podman-configs/v5.7.1-hyperv.ign").read_bytes()
    write_pool(tmp_path, pool_bytes(podman_dice(config)))
    out = find_sources(fwcfg_opener=no_device, qemufwcfg_mount=None, probe=hyperv_probe(tmp_path))
    assert out.config == config
    assert out.config_origin == "hyperv KVP /var/db/hyperv/pool/.kvp_pool_0"
    assert out.unsupported == []
    assert (
        out.attempts[-1].line()
        == f"hyperv KVP /var/db/hyperv/pool/.kvp_pool_0: found ({len(config)} bytes in 4 keys)"
    )


def test_hyperv_without_pool_file_says_daemon_not_running(tmp_path: Path) -> None:
    out = find_sources(fwcfg_opener=no_device, qemufwcfg_mount=None, probe=hyperv_probe(tmp_path))
    assert out.config is None
    assert [a.source for a in out.unsupported] == ["hyperv KVP (ignition.config.N)"]
    assert "hv_kvp_daemon has not run" in out.unsupported[0].detail
    assert "kern.vm_guest=hv" in out.unsupported[0].detail
    assert out.summary().startswith("no config: hyperv KVP")


def test_hyperv_pool_with_gap_is_reported_as_error(tmp_path: Path) -> None:
    from test_kvp import podman_dice, pool_bytes, write_pool

    parts = podman_dice((Path(__file__).parent / "podman-configs/v5.7.1-hyperv.ign").read_bytes())
    write_pool(tmp_path, pool_bytes(parts, [0, 1, 3]))
    log = Log()
    out = find_sources(fwcfg_opener=no_device, qemufwcfg_mount=None, probe=hyperv_probe(tmp_path), log=log)
    assert out.config is None
    assert any("hyperv KVP /var/db/hyperv/pool/.kvp_pool_0: error (missing" in line for line in log.lines)
    assert [a.status for a in out.attempts if a.source.startswith("hyperv KVP /")] == ["error"]
    assert "missing ignition.config.2" in out.unsupported[0].detail


def test_kvp_pool_only_read_under_hyperv_and_after_fwcfg(tmp_path: Path) -> None:
    from test_kvp import pool_bytes, write_pool

    write_pool(tmp_path, pool_bytes([b'{"ignition":{"version":"3.4.0"}}']))
    not_hv = find_sources(
        fwcfg_opener=no_device, qemufwcfg_mount=None, probe=Probe(RootFS(tmp_path), lambda argv: None)
    )
    assert not_hv.config is None and not any("KVP" in a.source for a in not_hv.attempts)
    device = FakeDevice({CFG: b"{}"})
    first = find_sources(fwcfg_opener=lambda: device, qemufwcfg_mount=None, probe=hyperv_probe(tmp_path))
    assert first.config == b"{}" and not any("KVP" in a.source for a in first.attempts)
    off = find_sources(
        fwcfg_opener=no_device, qemufwcfg_mount=None, probe=hyperv_probe(tmp_path), kvp_pool=None
    )
    assert off.config is None and off.unsupported[0].source == "hyperv KVP (ignition.config.N)"
