"""`fpvm build --method builder-vm` end to end with the stand-in QEMU: the accelerator is probed, a
KVM that cannot run a VM here means TCG with one warning and the build goes on to the image.

Real: the HTTP mirror on 127.0.0.1, qemu-img, the cidata ISO, the output steps. Stand-in: QEMU
(tests/contract/standins/qemu.py), which fails ``-accel kvm`` the way QEMU 7.2 does on nested hosts
and otherwise "builds": it writes an image to the output disk and the result line to the serial log.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import zstandard
from test_image_download import Mirror, mirror  # noqa: F401  (fixture)

from fpvm import arch as archmod
from fpvm.machine import qemu_host
from fpvm_runner import fpvm_main

STANDIN = Path(__file__).resolve().parents[1] / "contract" / "standins" / "qemu.py"
HOST = archmod.host()


@pytest.fixture
def builder_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mirror: Mirror) -> Path:  # noqa: F811
    """Stand-in QEMU as $FPVM_QEMU on a Linux host whose /dev/kvm opens; a published builder image."""
    wrapper = tmp_path / "qemu-system-standin"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("FPVM_QEMU", str(wrapper))
    monkeypatch.setenv("FAKE_QEMU_RECORD", str(tmp_path / "argv.jsonl"))
    image = tmp_path / "built.raw"
    image.write_bytes(b"\xeb\x3c" + bytes(4094) + b"FreeBSD built in the stand-in\n" * 100)
    monkeypatch.setenv("FAKE_QEMU_BUILD_IMAGE", str(image))
    monkeypatch.setenv("FPVM_FIRMWARE", "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")  # for an arm64 host
    monkeypatch.setattr(
        qemu_host.Host, "detect", classmethod(lambda cls: qemu_host.Host("linux", HOST, True))
    )
    mirror.publish(HOST, bytes(1 << 20))
    (tmp_path / "fpvm-0.0.0-py3-none-any.whl").write_bytes(b"not used by the stand-in")
    return tmp_path


def _build(tmp_path: Path, mirror: Mirror, *args: str) -> tuple[int, str]:  # noqa: F811
    status, _, stderr = fpvm_main(
        "build",
        "--method",
        "builder-vm",
        "--mirror",
        mirror.url,
        "--output-dir",
        str(tmp_path / "out"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--wheel",
        str(tmp_path / "fpvm-0.0.0-py3-none-any.whl"),
        "--image-size",
        "2g",
        *args,
    )
    return status, stderr


def _runs(tmp_path: Path) -> list[list[str]]:
    record = tmp_path / "argv.jsonl"
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def _accel(argv: list[str]) -> str:
    return argv[argv.index("-accel") + 1]


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "warning:" in line]


def _image(tmp_path: Path) -> bytes:
    out = tmp_path / "out" / f"fpvm-15.1-RELEASE-{HOST}.raw.zst"
    return zstandard.ZstdDecompressor().decompressobj().decompress(out.read_bytes())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["kvm", "kvm-abort"])
def test_kvm_that_fails_falls_back_to_tcg_and_the_build_goes_on(
    builder_env: Path,
    mirror: Mirror,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    monkeypatch.setenv("FAKE_QEMU_ACCEL_FAIL", mode)
    status, stderr = _build(builder_env, mirror)
    assert status == 0, stderr
    (warning,) = _warnings(stderr)
    assert "--accel tcg" in warning and "10-50x slower" in warning and "KVM" in warning
    probe, real = _runs(builder_env)
    assert _accel(probe) == "kvm" and "stdio" in probe
    assert _accel(real) == "tcg" and real[real.index("-cpu") + 1] == "max" and "-no-reboot" in real
    assert _image(builder_env) == (builder_env / "built.raw").read_bytes()


@pytest.mark.slow
def test_accel_tcg_is_neither_probed_nor_warned(
    builder_env: Path,
    mirror: Mirror,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_QEMU_ACCEL_FAIL", "kvm")
    status, stderr = _build(builder_env, mirror, "--accel", "tcg")
    assert status == 0, stderr
    assert _warnings(stderr) == []
    assert [_accel(a) for a in _runs(builder_env)] == ["tcg"]
    assert _image(builder_env) == (builder_env / "built.raw").read_bytes()


def test_accel_kvm_that_fails_is_an_error(
    builder_env: Path,
    mirror: Mirror,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_QEMU_ACCEL_FAIL", "kvm")
    status, stderr = _build(builder_env, mirror, "--accel", "kvm")
    assert status == 1 and _warnings(stderr) == []
    assert "fpvm build: error: --accel kvm: QEMU cannot start a VM with KVM on this host" in stderr
    assert "failed to set MSR 0x10a" in stderr and "Use --accel tcg" in stderr
    assert "Traceback" not in stderr
    assert len(_runs(builder_env)) == 1  # the probe only: no builder VM, no download
    assert not (builder_env / "out").exists() or list((builder_env / "out").iterdir()) == []
