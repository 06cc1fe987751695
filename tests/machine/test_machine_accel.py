"""The accelerator: chosen, probed, and when KVM/HVF cannot run a VM here, TCG with one warning.

The stand-in QEMU (tests/contract/standins/qemu.py) fails with ``FAKE_QEMU_ACCEL_FAIL`` exactly as QEMU
7.2 does on nested/paravirtual hosts (message on stderr, exit at once, only when KVM/HVF is asked); the
probe's success path and QEMU's own refusal of an accelerator are checked against the real QEMU.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from machine_support import FAKE_QEMU

from fpvm import arch as archmod
from fpvm.machine import lifecycle, qemu_accel, qemu_host, state
from fpvm.machine.errors import MachineError
from fpvm_runner import fpvm_main

HOST = archmod.host()
LINUX_KVM = qemu_host.Host("linux", HOST, kvm=True)
REAL_QEMU = f"/usr/bin/qemu-system-{archmod.qemu_name(HOST)}"


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in as $FPVM_QEMU, recording every command line it is started with."""
    wrapper = tmp_path / "qemu-system-standin"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_QEMU}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("FPVM_QEMU", str(wrapper))
    monkeypatch.setenv("FAKE_QEMU_RECORD", str(tmp_path / "argv.jsonl"))
    return tmp_path / "argv.jsonl"


def _runs(record: Path) -> list[list[str]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


def _accel(argv: list[str]) -> str:
    return argv[argv.index("-accel") + 1]


def _is_probe(argv: list[str]) -> bool:
    return argv[argv.index("-qmp") + 1] == "stdio"


@pytest.mark.parametrize(
    ("guest", "host", "accel", "why"),
    [
        ("aarch64", qemu_host.Host("darwin", "aarch64", kvm=False), "hvf", None),
        ("amd64", qemu_host.Host("darwin", "aarch64", kvm=False), "tcg", "the guest is amd64"),
        ("amd64", qemu_host.Host("linux", "amd64", kvm=True), "kvm", None),
        ("amd64", qemu_host.Host("linux", "amd64", kvm=False), "tcg", "/dev/kvm is missing"),
        ("amd64", qemu_host.Host("win32", "amd64", kvm=False), "tcg", "no QEMU accelerator"),
    ],
)
def test_choice_before_the_probe(guest: str, host: qemu_host.Host, accel: str, why: str | None) -> None:
    got, reason = qemu_accel.choose(guest, host)
    assert got == accel
    assert (reason is None) if why is None else (reason is not None and why in reason)


@pytest.mark.slow
def test_probe_against_real_qemu() -> None:
    """TCG always starts (paused, QMP answers); an accelerator QEMU refuses is reported in its words."""
    assert qemu_accel.probe(REAL_QEMU, HOST, "tcg") == qemu_accel.Probe(True, "")
    refused = qemu_accel.probe(REAL_QEMU, HOST, "nonsense")
    assert not refused.ok and "invalid accelerator nonsense" in refused.reason


@pytest.mark.parametrize(
    ("mode", "accel", "says"),
    [
        ("kvm", "kvm", "failed to set MSR 0x10a"),
        ("kvm-abort", "kvm", "killed by signal 6"),
        ("kvm-module", "kvm", "Could not access KVM kernel module"),
        ("hvf", "hvf", "HV_ERROR"),
    ],
)
def test_probe_sees_the_failure(
    standin: Path, monkeypatch: pytest.MonkeyPatch, mode: str, accel: str, says: str
) -> None:
    monkeypatch.setenv("FAKE_QEMU_ACCEL_FAIL", mode)
    exe = os.environ["FPVM_QEMU"]
    result = qemu_accel.probe(exe, "aarch64" if accel == "hvf" else "amd64", accel)
    assert not result.ok and says in result.reason
    # The failing mode fails only what it is about: TCG still starts.
    assert qemu_accel.probe(exe, "amd64", "tcg").ok


def test_resolve(standin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = os.environ["FPVM_QEMU"]
    assert qemu_accel.resolve(exe, HOST, LINUX_KVM) == qemu_accel.Choice("kvm")  # works: no warning
    assert qemu_accel.resolve(exe, HOST, LINUX_KVM, "tcg") == qemu_accel.Choice("tcg")
    monkeypatch.setenv("FAKE_QEMU_ACCEL_FAIL", "kvm")
    fallback = qemu_accel.resolve(exe, HOST, LINUX_KVM)
    assert fallback.accel == "tcg" and fallback.warning is not None
    assert "failed to set MSR" in fallback.warning and "--accel tcg" in fallback.warning
    assert "10-50x slower" in fallback.warning
    with pytest.raises(MachineError, match=r"--accel kvm: QEMU cannot start a VM with KVM.*Use --accel tcg"):
        qemu_accel.resolve(exe, HOST, LINUX_KVM, "kvm")
    assert [_accel(a) for a in _runs(standin)] == ["kvm", "kvm", "kvm"]  # tcg was never probed


# -- fpvm machine start ----------------------------------------------------------------------------


@pytest.fixture
def kvm_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Linux host whose /dev/kvm opens: whether KVM works is up to the stand-in."""
    monkeypatch.setattr(qemu_host.Host, "detect", classmethod(lambda cls: LINUX_KVM))


def _start(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    capsys.readouterr()
    status = fpvm_main("machine", "start", "vm", "--timeout", "30", *args).status
    out = capsys.readouterr()
    return status, [line for line in out.err.splitlines() if "warning:" in line], out.out + out.err


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["kvm", "kvm-abort", "kvm-module"])
def test_start_falls_back_to_tcg_with_one_warning(
    machine_env: Path,
    machine_disk: Path,
    standin: Path,
    kvm_host: None,
    vm_reaper: list[int],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    assert fpvm_main("machine", "init", "vm", "--image", str(machine_disk), "--arch", HOST).status == 0
    monkeypatch.setenv("FAKE_QEMU_ACCEL_FAIL", mode)
    status, warnings, text = _start(capsys)
    pid = state.vm_pid(state.Paths.of("vm"))
    assert pid is not None
    vm_reaper.append(pid)
    assert status == 0, text
    assert len(warnings) == 1, text
    assert "--accel tcg" in warnings[0] and "10-50x slower" in warnings[0] and "KVM" in warnings[0]
    assert "Machine vm is ready (accel tcg" in text
    probe, real = _runs(standin)
    assert _is_probe(probe) and _accel(probe) == "kvm"
    assert not _is_probe(real) and _accel(real) == "tcg" and real[real.index("-cpu") + 1] == "max"
    assert lifecycle.stop("vm", timeout=10) == 0


@pytest.mark.slow
def test_start_with_accel_tcg_neither_probes_nor_warns(
    machine_env: Path,
    machine_disk: Path,
    standin: Path,
    kvm_host: None,
    vm_reaper: list[int],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert fpvm_main("machine", "init", "vm", "--image", str(machine_disk), "--arch", HOST).status == 0
    monkeypatch.setenv("FAKE_QEMU_ACCEL_FAIL", "kvm")
    status, warnings, text = _start(capsys, "--accel", "tcg")
    pid = state.vm_pid(state.Paths.of("vm"))
    assert pid is not None
    vm_reaper.append(pid)
    assert status == 0 and warnings == [], text
    assert [_accel(a) for a in _runs(standin)] == ["tcg"]
    assert lifecycle.stop("vm", timeout=10) == 0


def test_start_with_accel_kvm_that_fails_is_an_error(
    machine_env: Path,
    machine_disk: Path,
    standin: Path,
    kvm_host: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The user insisted on KVM: no silent fallback, an error that names the way out."""
    assert fpvm_main("machine", "init", "vm", "--image", str(machine_disk), "--arch", HOST).status == 0
    monkeypatch.setenv("FAKE_QEMU_ACCEL_FAIL", "kvm")
    status, warnings, text = _start(capsys, "--accel", "kvm")
    assert status == 1 and warnings == []
    assert "fpvm: error: --accel kvm: QEMU cannot start a VM with KVM on this host" in text
    assert "failed to set MSR 0x10a" in text and "Use --accel tcg" in text and "Traceback" not in text
    assert [_is_probe(a) for a in _runs(standin)] == [True]  # the VM itself was never started
    assert state.vm_pid(state.Paths.of("vm")) is None


def test_dry_run_starts_nothing(
    machine_env: Path, machine_disk: Path, standin: Path, kvm_host: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fpvm_main("machine", "init", "vm", "--image", str(machine_disk), "--arch", HOST).status == 0
    capsys.readouterr()
    assert fpvm_main("machine", "start", "vm", "--dry-run").status == 0
    argv = capsys.readouterr().out.splitlines()[-1].split()
    assert _accel(argv) == "kvm" and _runs(standin) == []
