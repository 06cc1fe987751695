"""The host-dependent choices in the QEMU argv: accelerator, firmware form, network, volumes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fpvm.machine import qemu, qemu_host
from fpvm.machine.errors import MachineError
from fpvm.machine.state import Machine, Paths, Volume

MAC = qemu_host.Host("darwin", "aarch64", kvm=False)
LINUX_KVM = qemu_host.Host("linux", "amd64", kvm=True)
LINUX_NO_KVM = qemu_host.Host("linux", "amd64", kvm=False)


def _machine(arch: str, volumes: list[Volume] | None = None) -> Machine:
    return Machine(
        name="m", arch=arch, cpus=2, memory=2048, disk_size=20, disk_format="raw", ssh_port=2222, uid=501,
        image_source="x", created="now", volumes=volumes or [],
    )  # fmt: skip


def _opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


@pytest.mark.parametrize(
    ("arch", "host", "accel", "cpu"),
    [
        ("aarch64", MAC, "hvf", "host"),
        ("amd64", LINUX_KVM, "kvm", "host"),
        ("amd64", LINUX_NO_KVM, "tcg", "max"),
        ("aarch64", LINUX_KVM, "tcg", "max"),  # another architecture: emulation whatever /dev/kvm says
        ("amd64", MAC, "tcg", "max"),  # x86 guest on Apple silicon
    ],
)
def test_accelerator(arch: str, host: qemu_host.Host, accel: str, cpu: str, tmp_path: Path) -> None:
    fw = tmp_path / "QEMU_EFI.fd"
    fw.write_bytes(b"\0" * 4096)
    plan = qemu.build(_machine(arch), Paths(tmp_path, tmp_path / "run"), qemu="qemu", host=host, firmware=fw)
    assert plan.accel == accel
    assert _opt(plan.argv, "-accel") == [accel] and _opt(plan.argv, "-cpu") == [cpu]


def test_aarch64_machine_and_firmware_forms(tmp_path: Path) -> None:
    paths = Paths(tmp_path, tmp_path / "run")
    small = tmp_path / "QEMU_EFI.fd"  # Debian's qemu-efi-aarch64: 2 MiB, loaded with -bios
    small.write_bytes(b"\0" * (2 << 20))
    plan = qemu.build(_machine("aarch64"), paths, qemu="q", host=MAC, firmware=small)
    assert _opt(plan.argv, "-machine") == ["virt,highmem=on"]
    assert _opt(plan.argv, "-bios") == [str(small)] and "if=pflash" not in " ".join(plan.argv)
    big = tmp_path / "edk2-aarch64-code.fd"  # Homebrew: 64 MiB pflash image
    with big.open("wb") as fh:
        fh.truncate(qemu.PFLASH_SIZE)
    plan = qemu.build(_machine("aarch64"), paths, qemu="q", host=LINUX_NO_KVM, firmware=big)
    assert _opt(plan.argv, "-machine") == ["virt,gic-version=max"]
    assert _opt(plan.argv, "-drive")[:2] == [
        f"if=pflash,format=raw,unit=0,readonly=on,file={big}",
        f"if=pflash,format=raw,unit=1,file={paths.efi_vars}",
    ]
    with pytest.raises(MachineError, match="UEFI firmware"):
        qemu.build(_machine("aarch64"), paths, qemu="q", host=MAC)


def test_user_network_forwards_ssh_on_loopback_only(tmp_path: Path) -> None:
    plan = qemu.build(_machine("amd64"), Paths(tmp_path, tmp_path / "r"), qemu="q", host=LINUX_KVM)
    assert plan.network == "user" and plan.gvproxy_argv is None
    assert _opt(plan.argv, "-netdev") == ["user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22"]
    assert _opt(plan.argv, "-device")[0] == "virtio-net-pci,netdev=net0,mac=5a:94:ef:e4:0c:ee"


def test_gvproxy_when_installed(tmp_path: Path) -> None:
    paths = Paths(tmp_path, tmp_path / "r")
    plan = qemu.build(
        _machine("amd64"), paths, qemu="q", host=LINUX_KVM, gvproxy="/usr/libexec/podman/gvproxy"
    )
    assert plan.network == "gvproxy"
    assert _opt(plan.argv, "-netdev") == [
        f"stream,id=net0,server=off,addr.type=unix,addr.path={paths.gvproxy_sock}"
    ]
    assert plan.gvproxy_argv == [
        "/usr/libexec/podman/gvproxy", "-listen-qemu", f"unix://{paths.gvproxy_sock}", "-ssh-port", "2222",
        "-pid-file", str(paths.gvproxy_pidfile),
    ]  # fmt: skip
    forced = qemu.build(
        _machine("amd64"), paths, qemu="q", host=LINUX_KVM, network="user", gvproxy="/x/gvproxy"
    )
    assert forced.network == "user"
    with pytest.raises(MachineError, match="gvproxy not found"):
        qemu.build(_machine("amd64"), paths, qemu="q", host=LINUX_KVM, network="gvproxy")


def test_volumes_config_ready_port_console(tmp_path: Path) -> None:
    vols = [
        Volume("/Users/me/src", "/Users/me/src", False, "fpvm0"),
        Volume("/data", "/mnt/data", True, "fpvm1"),
    ]
    paths = Paths(tmp_path, tmp_path / "r")
    argv = qemu.build(_machine("amd64", vols), paths, qemu="q", host=LINUX_KVM).argv
    assert _opt(argv, "-virtfs") == [
        "local,path=/Users/me/src,mount_tag=fpvm0,security_model=none,id=fpvm0",
        "local,path=/data,mount_tag=fpvm1,security_model=none,id=fpvm1,readonly=on",
    ]
    assert _opt(argv, "-fw_cfg") == [f"name=opt/com.coreos/config,file={paths.config}"]
    assert "virtserialport,bus=vser0.0,chardev=ready,name=org.fedoraproject.port.0" in argv
    assert _opt(argv, "-serial") == ["chardev:console"]
    assert f"logfile={paths.console_log}" in " ".join(argv)
    assert _opt(argv, "-qmp") == [f"unix:{paths.qmp},server=on,wait=off"]
    assert _opt(argv, "-drive") == [f"if=virtio,format=raw,file={paths.disk}"]


def test_commas_in_paths_are_doubled_in_option_strings(tmp_path: Path) -> None:
    """QEMU's option syntax ends a value at ','; a literal one is written ',,'. Whole-argument values
    (``-pidfile``) are not option strings and stay as they are. The real QEMU reading such an argv is in
    test_machine_qemu_real.py."""
    paths = Paths(tmp_path / "da,ta" / "m", tmp_path / "r,un" / "m")
    vols = [Volume("/Users/me/a,b", "/src", True, "fpvm0")]
    fw = tmp_path / "fw,dir" / "edk2-aarch64-code.fd"
    fw.parent.mkdir()
    with fw.open("wb") as fh:
        fh.truncate(qemu.PFLASH_SIZE)
    plan = qemu.build(_machine("aarch64", vols), paths, qemu="q", host=MAC, firmware=fw, gvproxy="/x/gvproxy")
    d, r = str(paths.dir).replace(",", ",,"), str(paths.run).replace(",", ",,")
    argv = plan.argv
    assert _opt(argv, "-drive") == [
        f"if=pflash,format=raw,unit=0,readonly=on,file={str(fw).replace(',', ',,')}",
        f"if=pflash,format=raw,unit=1,file={d}/efi-vars.fd",
        f"if=virtio,format=raw,file={d}/disk.img",
    ]
    assert _opt(argv, "-netdev") == [f"stream,id=net0,server=off,addr.type=unix,addr.path={r}/gvproxy.sock"]
    assert _opt(argv, "-fw_cfg") == [f"name=opt/com.coreos/config,file={d}/config.ign"]
    assert _opt(argv, "-virtfs") == [
        "local,path=/Users/me/a,,b,mount_tag=fpvm0,security_model=none,id=fpvm0,readonly=on"
    ]
    assert _opt(argv, "-chardev") == [
        f"socket,id=ready,path={r}/ready.sock,server=on,wait=off",
        f"socket,id=console,path={r}/console.sock,server=on,wait=off,logfile={d}/console.log,logappend=on",
    ]
    assert _opt(argv, "-qmp") == [f"unix:{r}/qmp.sock,server=on,wait=off"]
    assert _opt(argv, "-pidfile") == [str(paths.pidfile)]
    # gvproxy takes a URL, not a QEMU option string.
    assert plan.gvproxy_argv is not None and f"unix://{paths.gvproxy_sock}" in plan.gvproxy_argv


def test_firmware_found_next_to_qemu_then_in_debians_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 7: edk2 in the usual places: a Homebrew-shaped prefix first, then Debian's qemu-efi-aarch64."""
    monkeypatch.delenv("FPVM_FIRMWARE", raising=False)
    prefix = tmp_path / "homebrew"  # Homebrew: bin/qemu-system-aarch64 and share/qemu/edk2-aarch64-code.fd
    (prefix / "bin").mkdir(parents=True)
    (prefix / "share/qemu").mkdir(parents=True)
    binary = prefix / "bin/qemu-system-aarch64"
    binary.touch()
    brew = prefix / "share/qemu/edk2-aarch64-code.fd"
    brew.touch()
    assert qemu_host.find_firmware(str(binary)) == brew
    brew.unlink()
    # Debian's qemu-efi-aarch64 package, installed on this host (the real file, not a stand-in).
    debian = Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")
    assert debian.is_file() and debian.stat().st_size < qemu.PFLASH_SIZE
    assert qemu_host.find_firmware(str(binary)) == debian
    monkeypatch.setenv("FPVM_FIRMWARE", str(tmp_path / "missing.fd"))
    with pytest.raises(MachineError, match=r"FPVM_FIRMWARE=.*does not exist"):
        qemu_host.find_firmware(str(binary))
