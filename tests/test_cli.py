"""The top-level command and the shared helpers every area relies on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fpvm import arch, cli, fsutil


def test_version_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fpvm", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("fpvm ")


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("amd64", "amd64"),
        ("x86_64", "amd64"),
        ("AMD64", "amd64"),
        ("aarch64", "aarch64"),
        ("arm64", "aarch64"),
    ],
)
def test_arch_synonyms(given: str, expected: str) -> None:
    assert arch.normalize(given) == expected


def test_arch_unknown() -> None:
    with pytest.raises(arch.ArchError, match="unknown architecture 'riscv64'"):
        arch.normalize("riscv64")


def test_arch_names_for_tools() -> None:
    assert arch.qemu_name("amd64") == "x86_64"
    assert arch.freebsd_machine("aarch64") == "arm64"


def test_atomic_write_replaces_and_sets_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    fsutil.atomic_write(target, b"new", mode=0o600)
    assert target.read_bytes() == b"new"
    assert (target.stat().st_mode & 0o7777) == 0o600
    assert os.listdir(tmp_path) == ["f"]


def test_atomic_write_unsynced_is_still_a_rename(tmp_path: Path) -> None:
    target = tmp_path / "g"
    fsutil.atomic_write(target, b"data", mode=0o640, sync=False)
    assert target.read_bytes() == b"data"
    assert (target.stat().st_mode & 0o7777) == 0o640
    assert os.listdir(tmp_path) == ["g"]


def test_atomic_write_failure_leaves_no_temporary(tmp_path: Path) -> None:
    # The rename fails (the target is a non-empty directory): the temporary file must not be left.
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "x").write_text("")
    with pytest.raises(OSError):
        fsutil.atomic_write(tmp_path / "h", b"x")
    assert sorted(os.listdir(tmp_path)) == ["h"]
