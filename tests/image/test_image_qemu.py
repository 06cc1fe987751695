"""The builder VM's QEMU command, accepted by real QEMU (started paused, inspected over QMP), and the
host side of the result: the serial marker, the output disk, the deadline."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from fpvm.image import builder_vm, cidata, recipe
from fpvm.image.plan import BuildError
from fpvm.machine import qemu_host
from fpvm.machine.qemu_argv import PFLASH_SIZE

EDK2 = Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")
AAVMF = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
VIRTIO_VENDOR = 0x1AF4
VIRTIO_BLK = {0x1001, 0x1042}
VIRTIO_NET = {0x1000, 0x1041}


class Qmp:
    def __init__(self, path: Path) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.reader = self.sock.makefile("r")
        json.loads(self.reader.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name: str) -> object:
        self.sock.sendall(json.dumps({"execute": name}).encode() + b"\n")
        while True:
            reply = json.loads(self.reader.readline())
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise AssertionError(reply["error"])

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _files(tmp_path: Path) -> builder_vm.VmFiles:
    files = builder_vm.VmFiles(
        disk=tmp_path / "builder.qcow2",
        output=tmp_path / "output.raw",
        cidata=tmp_path / "cidata.iso",
        serial_log=tmp_path / "serial.log",
        qmp=tmp_path / "qmp.sock",
    )
    base = tmp_path / "base.raw"
    base.write_bytes(bytes(1 << 20))
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(files.disk), "64M"],
        check=True,
    )
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(files.output), "32M"], check=True)
    cidata.write_cidata(files.cidata, {"user-data": b"#!/bin/sh\n", "meta-data": b""})
    return files


@pytest.mark.slow
@pytest.mark.parametrize(
    ("builder_arch", "firmware"),
    [
        ("amd64", None),
        ("aarch64", EDK2),  # Debian's qemu-efi-aarch64 (2 MiB): -bios
        ("aarch64", AAVMF),  # the pflash shape of Homebrew's edk2: code read-only + a vars store
    ],
)
def test_real_qemu_accepts_the_builder_vm(tmp_path: Path, builder_arch: str, firmware: Path | None) -> None:
    """The argv of the shared layer (fpvm.machine.qemu_argv), every path in a folder with a comma."""
    work = tmp_path / "wo,rk"
    work.mkdir()
    files = _files(work)
    assert "," in str(files.disk) and "," in str(files.vars_store)
    qemu = qemu_host.find_qemu(builder_arch)
    if firmware == EDK2:
        assert qemu_host.find_firmware(qemu) == EDK2, "Debian's qemu-efi-aarch64 firmware is a test peer"
    if firmware == AAVMF:
        assert AAVMF.stat().st_size == PFLASH_SIZE, "Debian's AAVMF is the pflash-shaped edk2 here"
        qemu_host.ensure_efi_vars(files.vars_store)
    argv = builder_vm.vm_argv(qemu, builder_arch, "tcg", 256, 1, files, firmware)
    proc = subprocess.Popen([*argv, "-S"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        qmp = Qmp(files.qmp)
        blocks = {b["device"]: b for b in qmp.cmd("query-block")}  # type: ignore[attr-defined]
        assert blocks["builder"]["inserted"]["file"] == str(files.disk)
        assert blocks["builder"]["inserted"]["drv"] == "qcow2"
        assert blocks["output"]["inserted"]["drv"] == "raw" and not blocks["output"]["inserted"]["ro"]
        assert blocks["cidata"]["inserted"]["ro"] is True
        assert blocks["output"]["inserted"]["file"] == str(files.output)
        if firmware == AAVMF:
            assert blocks["pflash0"]["inserted"]["ro"] is True
            assert blocks["pflash1"]["inserted"]["file"] == str(files.vars_store)
        assert files.serial_log.is_file()  # QEMU opened the serial file at the path meant, comma and all
        devices = [d for bus in qmp.cmd("query-pci") for d in bus["devices"]]  # type: ignore[attr-defined]
        ids = [(d["id"]["vendor"], d["id"]["device"]) for d in devices]
        assert sum(1 for v, d in ids if v == VIRTIO_VENDOR and d in VIRTIO_BLK) == 3
        assert sum(1 for v, d in ids if v == VIRTIO_VENDOR and d in VIRTIO_NET) == 1
        status = qmp.cmd("query-status")
        assert status["status"] == "prelaunch"  # type: ignore[index]
        qmp.cmd("quit")
        qmp.close()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_qemu_argv_shape() -> None:
    files = builder_vm.VmFiles(Path("d"), Path("o"), Path("c"), Path("s"), Path("q"))
    amd = builder_vm.vm_argv("qemu-system-x86_64", "amd64", "kvm", 2048, 2, files, None)
    assert amd[:7] == ["qemu-system-x86_64", "-machine", "q35", "-accel", "kvm", "-cpu", "host"]
    arm = builder_vm.vm_argv("qemu-system-aarch64", "aarch64", "tcg", 2048, 2, files, EDK2)
    assert arm[:7] == [
        "qemu-system-aarch64",
        "-machine",
        "virt,gic-version=max",
        "-accel",
        "tcg",
        "-cpu",
        "max",
    ]
    assert arm[arm.index("-bios") + 1] == str(EDK2)
    assert "-no-reboot" in amd and "if=none,id=output,file=o,format=raw" in amd


@pytest.mark.slow
def test_deadline_stops_the_vm_and_shows_the_serial_tail(tmp_path: Path) -> None:
    log = tmp_path / "kept.log"
    log.write_text("Booting...\nfpvm: building fpvm-15.1-RELEASE-amd64.raw.zst inside the builder VM\n")
    files = _files(tmp_path)  # QEMU writes its own (empty, paused) serial file; the tail comes from `log`
    argv = builder_vm.vm_argv("qemu-system-x86_64", "amd64", "tcg", 128, 1, files, None)
    with pytest.raises(BuildError, match=r"did not finish within 1 s(.|\n)*\| fpvm: building fpvm-15\.1"):
        builder_vm.run_vm([*argv, "-S"], log, deadline=1, status=False, poll=0.2)
    assert not files.qmp.exists() or _nobody_listens(files.qmp)


def _nobody_listens(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        return s.connect_ex(str(path)) != 0


def test_qemu_failure_is_reported(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"QEMU exited with status 1: .*nonsense"):
        builder_vm.run_vm(["qemu-system-x86_64", "-nonsense"], tmp_path / "log", deadline=30, status=False)


def test_result_marker_and_extraction(tmp_path: Path) -> None:
    image = b"\xeb\x3c" + bytes(4094) + b"fpvm" * 1024
    disk = tmp_path / "output.raw"
    disk.write_bytes(image + bytes(1 << 20))
    log = tmp_path / "serial.log"
    digest = hashlib.sha256(image).hexdigest()
    log.write_text(f"noise\nFPVM-BUILD-OK size={len(image)} sha256={digest}\r\nUptime: 1m\n")
    size, sha = builder_vm.parse_result(log)
    dest = tmp_path / "image.raw"
    builder_vm.extract(disk, size, sha, dest)
    assert dest.read_bytes() == image and not disk.exists()


def test_damaged_output_is_refused(tmp_path: Path) -> None:
    disk = tmp_path / "output.raw"
    disk.write_bytes(b"x" * 8192)
    with pytest.raises(BuildError, match="damaged"):
        builder_vm.extract(disk, 4096, "0" * 64, tmp_path / "image.raw")
    assert not (tmp_path / "image.raw").exists()


def test_failed_or_silent_builds(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_text(
        "pkg: No packages available to install matching 'podman-suite'\nFPVM-BUILD-FAILED status=1\n"
    )
    with pytest.raises(BuildError, match=r"failed \(status=1\)(.|\n)*\| pkg: No packages available"):
        builder_vm.parse_result(log)
    log.write_text("login:\n")
    with pytest.raises(BuildError, match="without reporting a result"):
        builder_vm.parse_result(log)


def test_download_names_for_both_builder_arches() -> None:
    r = recipe.Recipe(release=recipe.parse_release("15.1"), arch="amd64", method="builder-vm")
    assert builder_vm.image_file_name(r, "amd64") == "FreeBSD-15.1-RELEASE-amd64-BASIC-CLOUDINIT-ufs.raw.xz"
    assert builder_vm.image_file_name(r, "aarch64") == (
        "FreeBSD-15.1-RELEASE-arm64-aarch64-BASIC-CLOUDINIT-ufs.raw.xz"
    )
    assert builder_vm.image_dir_url(r, "aarch64") == (
        "https://download.freebsd.org/releases/VM-IMAGES/15.1-RELEASE/aarch64/Latest"
    )
