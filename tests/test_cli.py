"""The top-level command and the shared helpers every area relies on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import fpvm
from fpvm import arch, cli, fsutil
from fpvm_runner import fpvm_main, run_fpvm


def test_version_and_help() -> None:
    out = run_fpvm("--version", check=True)
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


# --- bad inputs: one clear message and a non-zero exit, never a traceback ------------------------------

BAD_KINDS = ("missing", "directory", "empty", "garbage")


def _bad_input(base: Path, kind: str) -> Path:
    path = base / f"input-{kind}"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.touch()
    elif kind == "garbage":
        path.write_bytes(bytes(range(256)) * 16)
    elif kind == "unreadable":
        path.write_text('{"ignition": {"version": "3.4.0"}}')
        path.chmod(0)
    return path


def _commands(base: Path) -> dict[str, Callable[[str], list[str]]]:
    root, rec = str(base / "root"), str(base / "record.jsonl")
    return {
        "ignition validate": lambda f: ["ignition", "validate", f],
        "ignition show": lambda f: ["ignition", "show", f],
        "guest plan": lambda f: ["guest", "plan", "--config", f],
        "guest provision": lambda f: [
            "guest",
            "provision",
            "--root",
            root,
            "--record",
            rec,
            "--config",
            f,
            "--no-ready",
        ],
        "guest boot": lambda f: [
            "guest",
            "boot",
            "--root",
            root,
            "--record",
            rec,
            "--config",
            f,
            "--no-fwcfg",
        ],
        "machine init": lambda f: ["machine", "init", "m", "--image", f, "--arch", "amd64"],
        "podman-machine doctor": lambda f: ["podman-machine", "doctor", "m", "--config", f],
        "podman-machine console": lambda f: ["podman-machine", "console", "m", "--config", f, "--no-attach"],
        "debug fwcfg": lambda f: ["debug", "fwcfg", "--qmp", f, "list"],
    }


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nothing a command writes leaves tmp_path (machine state, podman connections)."""
    home = tmp_path / "home"
    home.mkdir()
    for var, value in {
        "HOME": home,
        "XDG_DATA_HOME": home / "data",
        "XDG_CONFIG_HOME": home / "config",
        "XDG_RUNTIME_DIR": home / "run",
        "CONTAINERS_CONF": tmp_path / "containers.conf",
    }.items():
        monkeypatch.setenv(var, str(value))
    monkeypatch.delenv("FPVM_DEBUG", raising=False)
    return tmp_path


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("command", list(_commands(Path("/nonexistent-base"))))
def test_bad_input_file_gives_a_message_not_a_traceback(isolated: Path, command: str, kind: str) -> None:
    """Through the installed entry point (a process each: ``guest boot`` logs to the real stderr)."""
    path = _bad_input(isolated, kind)
    (isolated / "root").mkdir()
    argv = _commands(isolated)[command](str(path))
    res = run_fpvm(*argv, timeout=120)
    output = res.stdout + res.stderr
    assert res.returncode != 0, output
    assert "Traceback" not in output and "internal error" not in output, output
    # the message says which input is wrong: its name, or the JSON path in it
    assert path.name in output or "\n  $: " in output, output
    assert len(output.strip().splitlines()) <= 6, output


def test_unreadable_file() -> None:
    """Permission denied. Root reads any file, so as root the commands run as nobody (setpriv(1) from
    util-linux: it drops every capability, and the interpreter stays reachable)."""
    base = Path(tempfile.mkdtemp(prefix="fpvm-unreadable-", dir="/tmp"))
    try:
        base.chmod(0o755)
        path = _bad_input(base, "unreadable")
        demote = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        env = {**os.environ, "HOME": str(base)}
        if demote:
            # nobody may not reach the checkout (a private temporary folder): give it its own copy of fpvm.
            shutil.copytree(Path(fpvm.__file__).parent, base / "src" / "fpvm")
            env["PYTHONPATH"] = str(base / "src")
        for argv in (
            ["ignition", "validate", str(path)],
            ["ignition", "show", str(path)],
            ["guest", "plan", "--config", str(path)],
        ):
            res = subprocess.run(
                [*demote, sys.executable, "-m", "fpvm", *argv],
                capture_output=True,
                text=True,
                env=env,
                cwd=base,
                check=False,
            )
            assert res.returncode == 2, res.stderr
            assert res.stderr == f"{path}: cannot read: Permission denied\n"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize(
    "argv",
    [
        ["build", "--arch", "riscv64", "--dry-run"],
        ["machine", "init", "m", "--image", "x.raw", "--arch", "riscv64"],
        ["image", "overlay", "DIR", "--arch", "riscv64"],
    ],
)
def test_bad_arch(isolated: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    ran = fpvm_main(*argv)
    status, output = ran.status, ran.out + ran.err
    assert status == 2
    assert "Traceback" not in output
    assert (
        output.strip()
        .splitlines()[-1]
        .endswith(
            "error: argument --arch: unknown architecture 'riscv64': use amd64 (x86_64) or aarch64 (arm64)"
        )
    )


@pytest.mark.parametrize("kind", ["directory", "under-a-file"])
def test_shim_record_file_that_cannot_be_written(
    isolated: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    (isolated / "root").mkdir()
    record = isolated / "rec"
    if kind == "directory":
        record.mkdir()
    else:
        record.write_text("")
        record = record / "x"
    argv = [
        "guest",
        "shim",
        "--record",
        str(record),
        "--root",
        str(isolated / "root"),
        "systemctl",
        "restart",
        "podman",
    ]
    ran = fpvm_main(*argv)
    status, output = ran.status, ran.out + ran.err
    assert status == 1 and "Traceback" not in output
    assert f"{record}: " in output.strip().split("\n")[-1]  # one line naming the file


def test_image_overlay_into_a_file(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = _bad_input(isolated, "garbage")
    ran = fpvm_main("image", "overlay", str(target), "--arch", "amd64")
    status, output = ran.status, ran.out + ran.err
    assert status != 0 and "Traceback" not in output and target.name in output


def test_not_a_disk_image_points_to_fpvm_build(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ran = fpvm_main(
        "machine", "init", "m", "--image", str(_bad_input(isolated, "garbage")), "--arch", "amd64"
    )
    status, output = ran.status, ran.out + ran.err
    assert status == 1
    assert "is not a disk image" in output and "`fpvm build`" in output
    assert "fpvm-RELEASE-amd64.raw.zst" in output and "never becomes Ready" in output
    assert "BASIC-CLOUDINIT" not in output


def test_unexpected_errors_are_one_line_unless_debugging(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(args: object) -> int:
        raise RuntimeError("something broke")

    parser = cli.build_parser("ignition")
    real = cli.build_parser

    def patched(command: str | None = None) -> Any:
        parser.set_defaults(func=boom)
        return parser

    monkeypatch.setattr(cli, "build_parser", patched)
    monkeypatch.delenv("FPVM_DEBUG", raising=False)
    assert cli.main(["ignition"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("fpvm ignition: internal error: RuntimeError: something broke")
        and err.count("\n") == 1
    )
    monkeypatch.setenv("FPVM_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(["ignition"])
    assert real is not patched
