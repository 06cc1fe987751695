"""fw_cfg read inside the guest without a kernel module: /dev/io (amd64, io(4)), /dev/mem (arm64, mem(4)).

``FPVM_FWCFG_SHA256`` (set by tests/e2e/run) is the sha256 of the file QEMU was given with
``-fw_cfg name=opt/com.coreos/config,file=…``; the bytes read in the guest must match it exactly.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest
from freebsd_target import Target


def test_config_entry_is_listed(target: Target) -> None:
    names = target.check("fpvm debug fwcfg list")
    assert "opt/com.coreos/config" in names


def test_config_read_back_is_the_file_qemu_was_given(target: Target) -> None:
    data = target.run("fpvm debug fwcfg get opt/com.coreos/config").stdout
    expected = os.environ.get("FPVM_FWCFG_SHA256")
    if expected:
        assert hashlib.sha256(data).hexdigest() == expected
    # Whatever the host gave, it is podman's (or fpvm's) Ignition config and valid as such.
    res = subprocess.run(["fpvm", "ignition", "validate", "-q", "-"], input=data, capture_output=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_transport_device_exists(target: Target, arch: str) -> None:
    device = "/dev/io" if arch == "amd64" else "/dev/mem"
    assert target.exists(device), f"{device} is what the {arch} transport opens"


def test_securelevel_allows_the_read(target: Target) -> None:
    """io(4) and mem(4) refuse at securelevel > 0: the image keeps it at -1 or 0."""
    assert int(target.check("sysctl -n kern.securelevel")) <= 0


def test_iodev_pio_ioctl_number(target: Target, arch: str) -> None:
    """IODEV_PIO is _IOWR('I', 0, struct iodev_pio_req) = 0xC0104900 (dev/io/iodev.h, sys/ioccom.h)."""
    if arch != "amd64":
        pytest.skip("io(4) is amd64 only")
    if target.run("command -v cc").status != 0:
        pytest.skip("no C compiler on the target (the image has none); check on a FreeBSD host")
    program = (
        "#include <sys/types.h>\n#include <sys/ioccom.h>\n#include <dev/io/iodev.h>\n#include <stdio.h>\n"
        'int main(void) { printf("%lx\\n", (unsigned long)IODEV_PIO); return 0; }\n'
    )
    target.check("cat > /tmp/fpvm-iodev.c", input=program.encode())
    target.check("cc -o /tmp/fpvm-iodev /tmp/fpvm-iodev.c")
    assert target.check("/tmp/fpvm-iodev").strip() == "c0104900"


def test_arm64_base_address_found(target: Target, arch: str) -> None:
    """arm64 virt: the MMIO base comes from the FDT (hw.fdt.dtb) or the ACPI DSDT (QEMU0002)."""
    if arch != "aarch64":
        pytest.skip("the /dev/mem transport is arm64's")
    has_fdt = target.run("sysctl -b hw.fdt.dtb | wc -c").text.strip() not in ("", "0")
    dump = "acpidump -o /tmp/fpvm-dsdt.aml >/dev/null 2>&1 && test -s /tmp/fpvm-dsdt.aml"
    has_acpi = target.run(dump).status == 0
    assert has_fdt or has_acpi
