"""Nothing harms the host: every command that writes a root refuses the running system's own root.

The refusal is checked through the real command line. Where a regression would write the host's own
files, the "system root" is a staged tree: the subprocess points ``fpvm.hostroot.SYSTEM_ROOT``
at it before running ``fpvm.cli.main`` (the only difference from a plain ``fpvm`` run). On the real
``/`` only commands that would write nothing even without the guard are run. The FreeBSD-inside-fpvm
allowance goes through a monkeypatched kernel name and a marker in the staged tree; ``/`` is never
written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from guest_support import REPO, make_root, minimal, snapshot, write_config

from fpvm import hostroot
from fpvm.cli import main
from fpvm_runner import run_fpvm

STAGED_CLI = (
    "import sys\n"
    "import fpvm.hostroot as h\n"
    "h.SYSTEM_ROOT = sys.argv[1]\n"
    "from fpvm.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)
USER = {"name": "core", "uid": 501, "sshAuthorizedKeys": ["ssh-ed25519 AAAA k"]}


def run_cli(system_root: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    """``fpvm ARGS`` in a subprocess; with ``system_root`` the running system's root is that tree."""
    if system_root is None:
        return run_fpvm(*args)
    argv = [sys.executable, "-c", STAGED_CLI, str(system_root), *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False)


def commands(target: str, work: Path) -> dict[str, list[str]]:
    """Every command that writes a root, aimed at ``target``; inputs and records live in ``work``."""
    conf = write_config(work / "c.ign", minimal(passwd={"users": [USER]}))
    rec = str(work / "rec.jsonl")
    return {
        "image overlay": ["image", "overlay", target, "--arch", "amd64"],
        "guest provision": ["guest", "provision", "--root", target, "--config", str(conf), "--record", rec,
                            "--no-ready"],
        "guest boot": ["guest", "boot", "--root", target, "--config", str(conf), "--record", rec,
                       "--no-fwcfg"],
        "guest ready": ["guest", "ready", "--root", target, "--port", str(work / "port"), "--timeout", "0",
                        "--no-api-socket", "--ssh-port", "1"],
        "guest shim": ["guest", "shim", "--record", rec, "--root", target, "chattr", "-i", "/etc"],
    }  # fmt: skip


def assert_refused(res: subprocess.CompletedProcess[str], command: str) -> None:
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"fpvm {command}: error: refusing to write ")
    assert "this system's own root" in lines[0] and "inside an fpvm VM" in lines[0]


@pytest.fixture
def staged(tmp_path: Path) -> tuple[Path, Path]:
    """(a staged FreeBSD-like tree playing the running system's root, a work folder beside it)."""
    work = tmp_path / "work"
    work.mkdir()
    return make_root(tmp_path), work


def spellings(root: Path, tmp_path: Path) -> dict[str, str]:
    link = tmp_path / "link-to-root"
    link.symlink_to(root)
    return {
        "plain": str(root),
        "double-slash": "/" + str(root),
        "dot": f"{root}/.",
        "dotdot": f"{root}/etc/..",
        "missing-dotdot": f"{root}/not-there/..",
        "symlink": str(link),
    }


@pytest.mark.parametrize(
    "command", ["image overlay", "guest provision", "guest boot", "guest ready", "guest shim"]
)
def test_every_writing_command_refuses_the_systems_root(
    staged: tuple[Path, Path], tmp_path: Path, command: str
) -> None:
    root, work = staged
    before = snapshot(root, exclude=())
    for spelling, target in spellings(root, tmp_path).items():
        res = run_cli(root, *commands(target, work)[command])
        assert_refused(res, command)
        assert snapshot(root, exclude=()) == before, spelling
        assert sorted(p.name for p in work.iterdir()) == ["c.ign"], spelling  # no record, no port


def test_the_agents_own_entry_point_refuses_too(staged: tuple[Path, Path]) -> None:
    root, work = staged
    before = snapshot(root, exclude=())
    argv = [sys.executable, "-c", STAGED_CLI.replace("fpvm.cli", "fpvm.guest.__main__"), str(root)]
    res = subprocess.run([*argv, *commands(str(root), work)["guest provision"][1:]],
                         capture_output=True, text=True, cwd=REPO, check=False)  # fmt: skip
    assert_refused(res, "guest provision")
    assert snapshot(root, exclude=()) == before


@pytest.fixture
def bind_of(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """``bind(source) -> path``: a bind mount of ``source`` (needs CAP_SYS_ADMIN), unmounted afterwards."""
    mounted: list[Path] = []

    def bind(source: Path) -> Path:
        target = tmp_path / f"bind{len(mounted)}"
        target.mkdir()
        res = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"bind mounts need privileges here: {res.stderr.strip()}")
        mounted.append(target)
        return target

    yield bind
    for target in reversed(mounted):
        subprocess.run(["umount", str(target)], check=True)


def test_a_bind_mount_of_the_systems_root_is_refused(
    staged: tuple[Path, Path], bind_of: Callable[[Path], Path]
) -> None:
    root, work = staged
    before = snapshot(root, exclude=())
    target = bind_of(root)
    assert os.path.realpath(target) != os.path.realpath(root)  # only device and inode tell
    for command in ("image overlay", "guest provision", "guest shim"):
        assert_refused(run_cli(root, *commands(str(target), work)[command]), command)
    assert snapshot(root, exclude=()) == before


# -- the real / : read-only checks, and commands that would write nothing even without the guard -------
@pytest.mark.parametrize("path", ["/", "//", "/./", "///", "/tmp/..", "/nonexistent-fpvm/.."])
def test_the_real_root_in_every_spelling_is_the_systems_root(path: str) -> None:
    assert hostroot.is_system_root(path)


def test_links_and_binds_of_the_real_root_are_the_systems_root(
    tmp_path: Path, bind_of: Callable[[Path], Path]
) -> None:
    link = tmp_path / "rootlink"
    link.symlink_to("/")
    assert hostroot.is_system_root(link)
    assert not hostroot.is_system_root(tmp_path)
    assert not hostroot.is_system_root(tmp_path / "missing")
    assert hostroot.is_system_root(bind_of(Path("/")))


@pytest.mark.parametrize("root", ["/", "//", "/./", "/tmp/.."])
def test_provision_and_shim_refuse_the_real_root(tmp_path: Path, root: str) -> None:
    # A missing config: without the guard provision would stop at reading it, before any write.
    res = run_cli(None, "guest", "provision", "--root", root, "--config", str(tmp_path / "none.ign"))
    assert_refused(res, "guest provision")
    # Recording on the live root writes no log, and chattr -i is a no-op: harmless without the guard.
    rec = tmp_path / "rec.jsonl"
    res = run_cli(None, "guest", "shim", "--record", str(rec), "--root", root, "chattr", "-i", "/")
    assert_refused(res, "guest shim")
    assert not rec.exists()


def test_shim_default_root_is_the_systems_root_off_the_vm(tmp_path: Path) -> None:
    """Without --root a shim works on / (the VM's case): on this host that is refused."""
    res = run_cli(None, "guest", "shim", "--record", str(tmp_path / "rec"), "chattr", "-i", "/")
    assert_refused(res, "guest shim")


# -- inside the fpvm VM: FreeBSD with fpvm's rc.d script -------------------------------------------------
def _pretend(monkeypatch: pytest.MonkeyPatch, root: Path, system: str, marker: str | None) -> None:
    monkeypatch.setattr(hostroot, "SYSTEM_ROOT", str(root))
    monkeypatch.setattr(hostroot, "system_name", lambda: system)
    path = root / hostroot.GUEST_MARKER
    path.parent.mkdir(parents=True, exist_ok=True)
    if marker == "file":
        path.write_text("#!/bin/sh\n# PROVIDE: fpvm\n")
    elif marker == "symlink":
        (root / "elsewhere").write_text("x")
        path.symlink_to("../../../../elsewhere")
    elif marker == "directory":
        path.mkdir()


def test_inside_the_fpvm_vm_every_command_may_write_its_root(
    staged: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, work = staged
    _pretend(monkeypatch, root, "FreeBSD", "file")
    assert hostroot.in_fpvm_guest()
    cmds = commands(str(root), work)
    assert main(cmds["image overlay"]) == 0
    assert (root / "etc/fstab").read_bytes().startswith(b"# fpvm")
    assert main(cmds["guest provision"]) == 0
    assert (root / "usr/home/core/.ssh/authorized_keys").exists()
    assert main(cmds["guest boot"]) == 0
    assert main(cmds["guest shim"]) == 0
    assert "refusing" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("system", "marker"),
    [
        ("FreeBSD", None),
        ("Linux", "file"),
        ("Darwin", "file"),
        ("FreeBSD", "symlink"),
        ("FreeBSD", "directory"),
    ],
)
def test_anything_else_is_not_the_fpvm_vm(
    staged: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    system: str,
    marker: str | None,
) -> None:
    root, work = staged
    _pretend(monkeypatch, root, system, marker)
    assert not hostroot.in_fpvm_guest()
    before = snapshot(root, exclude=())
    for command, argv in commands(str(root), work).items():
        assert main(argv) == 1, command
        err = capsys.readouterr().err
        assert err.startswith(f"fpvm {command}: error: refusing to write ") and err.count("\n") == 1
    assert snapshot(root, exclude=()) == before
