"""`fpvm machine start --dry-run` produces an argv that the real QEMU 7.2 accepts, for both arches.

Each test runs the printed argv with ``-S`` (CPUs never start, so no guest code runs and TCG costs
nothing) and inspects the machine over QMP: the 9p devices carry fpvm's tags, the virtio-serial port
has the name podman's readiness protocol uses, and on x86 the Ignition config read back through
fw_cfg is byte for byte the file fpvm wrote.

Every path fpvm puts into an option string carries a comma here (data folder ``da,ta``, runtime folder
``r,un``, volume sources ``r,w``): QEMU reads ``,,`` as a literal comma, and an unescaped one would end
the value (QEMU then refuses the argv or opens the wrong file, which the fw_cfg read-back would show).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fpvm.fwcfg.qmp import QmpClient
from fpvm.machine import qemu, state
from fpvm_runner import fpvm_main

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def running(argv: list[str], qmp_path: Path) -> Iterator[QmpClient]:
    proc = subprocess.Popen(
        [*argv, "-S"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        end = time.monotonic() + 30
        while not state.socket_listening(qmp_path):
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"QEMU refused the argv (status {proc.returncode}):\n{out}\n{shlex.join(argv)}")
            assert time.monotonic() < end, "QEMU did not open its QMP socket"
            time.sleep(0.05)
        with QmpClient(str(qmp_path)) as q:
            yield q
    finally:
        proc.kill()
        proc.wait(10)


@pytest.fixture
def comma_env(machine_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """machine_env with a comma in the data and runtime folders (both under machine_env's /tmp dir)."""
    base = Path(os.environ["XDG_RUNTIME_DIR"]).parent
    run = base / "r,un"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_DATA_HOME", str(base / "da,ta"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    return machine_env


def _dry_run(name: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    capsys.readouterr()
    assert fpvm_main("machine", "start", name, "--dry-run", "--accel", "tcg").status == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert len(lines) == 1
    return shlex.split(lines[0])


def _check_devices(q: QmpClient, volumes: dict[str, bool]) -> None:
    qtree = q.hmp("info qtree")
    tags = re.findall(r'mount_tag = "([^"]+)"', qtree)
    assert sorted(tags) == sorted(volumes)
    assert re.search(r'dev: virtserialport.*?\n(?:\s+.*\n)*?\s+name = "org\.fedoraproject\.port\.0"', qtree)
    assert "dev: virtio-net-pci" in qtree and 'mac = "5a:94:ef:e4:0c:ee"' in qtree
    # The chardevs exist with the paths fpvm gave (ready, console with its log).
    chardevs = {c["label"]: c["filename"] for c in q.execute("query-chardev")}
    assert {"ready", "console"} <= set(chardevs)


def test_x86_64_argv_accepted_by_qemu(
    comma_env: Path, machine_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fpvm import fwcfg

    ro = comma_env / "r,o"
    rw = comma_env / "r,w"
    ro.mkdir()
    rw.mkdir()
    assert (
        fpvm_main(
            "machine",
            "init",
            "x",
            "--image",
            str(machine_disk),
            "--arch",
            "amd64",
            "--disk-size",
            "1",
            "--memory",
            "256",
            "--cpus",
            "1",
            "-v",
            f"{rw}:/home/me",
            "-v",
            f"{ro}:/mnt/ro:ro",
        ).status
        == 0
    )
    argv = _dry_run("x", capsys)
    assert argv[0].endswith("qemu-system-x86_64")
    assert argv[argv.index("-accel") + 1] == "tcg" and argv[argv.index("-machine") + 1] == "q35"
    paths = state.Paths.of("x")
    assert "," in str(paths.dir) and "," in str(paths.run)
    assert f"if=virtio,format=raw,file={str(paths.disk).replace(',', ',,')}" in argv
    paths.run.mkdir(parents=True)
    with running(argv, paths.qmp) as q:
        _check_devices(q, {"fpvm0": False, "fpvm1": True})
        # QEMU opened the files at the paths fpvm meant, commas included.
        blocks = [b["inserted"]["file"] for b in q.execute("query-block") if "inserted" in b]
        assert str(paths.disk) in blocks
        chardevs = {c["label"]: c["filename"] for c in q.execute("query-chardev")}
        assert str(paths.ready) in chardevs["ready"] and str(paths.console) in chardevs["console"]
        assert paths.pidfile.is_file() and paths.console_log.is_file()
        pci = [d for bus in q.execute("query-pci") for d in bus["devices"]]
        ninep = [d for d in pci if d["id"]["vendor"] == 0x1AF4 and d["id"]["device"] in (0x1009, 0x1049)]
        assert len(ninep) == 2
        q.close()  # the monitor serves one client at a time
        dev = fwcfg.open_device(qmp=str(paths.qmp))
        try:
            assert dev.read(qemu.CONFIG_FW_CFG) == paths.config.read_bytes()
        finally:
            dev.close()


def test_aarch64_argv_accepted_by_qemu(
    comma_env: Path, machine_disk: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Homebrew-shaped firmware (a 64 MiB pflash image): code read-only, a vars store per machine."""
    firmware = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
    assert firmware.stat().st_size == qemu.PFLASH_SIZE, "Debian's AAVMF is the pflash-shaped edk2 here"
    monkeypatch.setenv("FPVM_FIRMWARE", str(firmware))
    share = comma_env / "sh,are"
    share.mkdir()
    assert (
        fpvm_main(
            "machine",
            "init",
            "a",
            "--image",
            str(machine_disk),
            "--arch",
            "arm64",
            "--disk-size",
            "1",
            "--memory",
            "256",
            "--cpus",
            "1",
            "-v",
            f"{share}:/srv/share",
        ).status
        == 0
    )
    argv = _dry_run("a", capsys)
    assert argv[0].endswith("qemu-system-aarch64")
    assert argv[argv.index("-machine") + 1] == "virt,gic-version=max"
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={firmware}" in argv
    paths = state.Paths.of("a")
    assert "," in str(paths.efi_vars)
    paths.run.mkdir(parents=True)
    with running(argv, paths.qmp) as q:
        _check_devices(q, {"fpvm0": False})
        blocks = {b["device"]: b for b in q.execute("query-block")}
        assert blocks["pflash0"]["inserted"]["ro"] is True
        assert blocks["pflash1"]["inserted"]["file"] == str(paths.efi_vars)
        # fw_cfg is an MMIO device on virt: it is there, carrying the config file.
        assert "fw_cfg" in q.hmp("info qtree")
