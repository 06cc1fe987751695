"""`fpvm image overlay` applies completely or writes nothing.

Every precondition of every entry is checked before the first write; a failure while writing puts
back what was there. Each test plants an obstacle that only a *late* entry meets (the linux-compat
launchers come last) and compares a full snapshot of the tree before and after: types, bytes, link
targets, modes, owners, inodes and mtimes. Messages name the paths under the target.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fpvm.image import overlay
from fpvm_runner import fpvm_main

COMPAT = "usr/local/libexec/fpvm/linux-compat"
Tree = dict[str, tuple[object, ...]]


def snapshot(top: Path) -> Tree:
    """Every node under ``top`` (and ``top`` itself), byte for byte."""
    out: Tree = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [".", *dirnames, *filenames]:
            p = Path(dirpath) / name
            rel = str(p.relative_to(top))
            if name == "." and rel in out:
                continue
            st = p.lstat()
            common = (
                stat.S_IFMT(st.st_mode),
                st.st_mode & 0o7777,
                st.st_uid,
                st.st_gid,
                st.st_ino,
                st.st_mtime_ns,
            )
            if stat.S_ISLNK(st.st_mode):
                out[rel] = (*common, os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = (*common, p.read_bytes())
            else:
                out[rel] = common
    return out


def overlay_cli(target: Path, hostname: str = "fpvm") -> tuple[int, str, str]:
    return fpvm_main("image", "overlay", str(target), "--arch", "amd64", "--hostname", hostname)


@pytest.fixture
def previous(tmp_path: Path) -> Path:
    """A target that already holds an overlay (another host name), so a run would change files."""
    target = tmp_path / "ov"
    status, _, err = overlay_cli(target, hostname="before")
    assert status == 0, err
    return target


def _file_where_a_directory_is_needed(target: Path, tmp_path: Path) -> str:
    (target / "usr/local/libexec/fpvm").rename(tmp_path / "moved")
    (target / "usr/local/libexec/fpvm").write_bytes(b"in the way\n")
    return f"{target}/usr/local/libexec/fpvm exists and is not a directory"


def _directory_where_a_file_goes(target: Path, tmp_path: Path) -> str:
    (target / COMPAT / "systemd-tmpfiles").unlink()
    (target / COMPAT / "systemd-tmpfiles").mkdir()
    return f"{target}/{COMPAT}/systemd-tmpfiles is a directory"


def _symlink_in_the_way(target: Path, tmp_path: Path) -> str:
    outside = tmp_path / "outside"
    outside.mkdir()
    (target / COMPAT).rename(tmp_path / "moved")
    (target / COMPAT).symlink_to(outside)
    return f"{target}/{COMPAT} is a symbolic link"


def _fifo_where_a_file_goes(target: Path, tmp_path: Path) -> str:
    (target / COMPAT / "systemctl").unlink()
    os.mkfifo(target / COMPAT / "systemctl")
    return f"{target}/{COMPAT}/systemctl exists and is not a regular file"


def _file_where_a_link_goes(target: Path, tmp_path: Path) -> str:
    (target / "usr/bin/bash").unlink()
    (target / "usr/bin/bash").write_bytes(b"#!/bin/sh\n")
    (target / COMPAT / "mount").unlink()  # a late entry that would be written
    return f"{target}/usr/bin/bash exists and is not a symbolic link"


OBSTACLES: dict[str, Callable[[Path, Path], str]] = {
    "file-for-directory": _file_where_a_directory_is_needed,
    "directory-for-file": _directory_where_a_file_goes,
    "symlink-parent": _symlink_in_the_way,
    "fifo": _fifo_where_a_file_goes,
    "file-for-link": _file_where_a_link_goes,
}


@pytest.mark.parametrize("obstacle", sorted(OBSTACLES))
def test_an_obstacle_for_a_late_entry_writes_nothing(previous: Path, tmp_path: Path, obstacle: str) -> None:
    expected = OBSTACLES[obstacle](previous, tmp_path)
    before = snapshot(previous)
    status, out, err = overlay_cli(previous, hostname="after")
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("fpvm image overlay: error: ") and expected in err, err
    assert err.rstrip().endswith("nothing was written")
    assert snapshot(previous) == before
    assert not (tmp_path / "outside").exists() or list((tmp_path / "outside").iterdir()) == []


def test_every_problem_is_named(previous: Path, tmp_path: Path) -> None:
    first = _directory_where_a_file_goes(previous, tmp_path)
    second = _fifo_where_a_file_goes(previous, tmp_path)
    status, _, err = overlay_cli(previous, hostname="after")
    assert status == 1 and first in err and second in err


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Make a directory unwritable: chmod for a user; root ignores modes, so a read-only bind mount."""
    mounted: list[Path] = []

    def make(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o555)
            return
        for argv in (
            ["mount", "--bind", str(path), str(path)],
            ["mount", "-o", "remount,ro,bind", str(path)],
        ):
            res = subprocess.run(argv, capture_output=True, text=True)
            if res.returncode != 0:
                pytest.skip(f"root needs a read-only bind mount here: {res.stderr.strip()}")
            if argv[1] == "--bind":
                mounted.append(path)

    yield make
    for path in mounted:
        subprocess.run(["umount", str(path)], check=True)


def test_an_unwritable_directory_writes_nothing(previous: Path, read_only: Callable[[Path], None]) -> None:
    (previous / COMPAT / "chattr").unlink()  # a late entry must be created in the read-only folder
    read_only(previous / COMPAT)
    before = snapshot(previous)
    status, _, err = overlay_cli(previous, hostname="after")
    assert status == 1, err
    assert f"{previous}/{COMPAT} is not writable; nothing was written" in err
    assert snapshot(previous) == before


def test_a_missing_target_is_only_created_when_everything_can_be_written(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    status, _, err = overlay_cli(tmp_path / "file/ov")
    assert status == 1 and f"{tmp_path}/file exists and is not a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# -- failures while writing: what was staged goes, what was replaced comes back ----------------------
def _entries() -> list[overlay.Entry]:
    return overlay.entries("amd64", hostname="after")


@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_a_failed_rename_puts_everything_back(
    previous: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    # Three changes: the host name (replaced), two launchers (new, so a rollback removes them).
    (previous / COMPAT / "mount").unlink()
    (previous / COMPAT / "systemctl").unlink()
    before = snapshot(previous)
    real = os.replace
    calls = 0

    def flaky(src: str, dst: str) -> None:
        nonlocal calls
        calls += 1
        if calls == fail_at:
            raise OSError(5, "Input/output error", str(dst))
        real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(overlay.OverlayError, match=r"Input/output error.*nothing was changed"):
        overlay.write(previous, _entries())
    monkeypatch.undo()
    after = snapshot(previous)
    assert after.keys() == before.keys()  # no temporary file left, nothing new
    for rel, node in before.items():
        # Put back means the same type, bytes, target, mode and owner; a restored file is a new inode.
        assert after[rel][:4] == node[:4] and after[rel][6:] == node[6:], rel


def test_a_failed_staging_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ov"
    real = os.fsync
    calls = 0

    def full(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 25:
            raise OSError(28, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(overlay.OverlayError, match=r"No space left on device.*nothing was changed"):
        overlay.write(target, _entries())
    assert not target.exists()  # the directories it had made are gone too
    assert list(tmp_path.iterdir()) == []


def test_entries_the_batch_contradicts_are_refused_before_writing(tmp_path: Path) -> None:
    cases = [
        ([overlay.Entry("/a", b"x"), overlay.Entry("/a/b", b"y")], f"{tmp_path}/a is needed as a directory"),
        (
            [overlay.Entry("/a", b"x"), overlay.Entry("/a", b"y")],
            f"{tmp_path}/a: more than one overlay entry",
        ),
        (
            [overlay.Entry("/a/b", b"x"), overlay.Entry("/a", target="b")],
            f"{tmp_path}/a is needed as a directory",
        ),
        ([overlay.Entry("/", b"x")], "the root itself"),
        ([overlay.Entry("/a/../b", b"x")], "'..' are refused"),
    ]
    for items, message in cases:
        with pytest.raises(overlay.OverlayError, match="nothing was written") as info:
            overlay.write(tmp_path, items)
        assert message in str(info.value)
        assert list(tmp_path.iterdir()) == []


def test_success_writes_every_entry_once(tmp_path: Path) -> None:
    target = tmp_path / "new/ov"
    status, out, err = overlay_cli(target)
    assert status == 0, err
    paths = [e.path for e in overlay.entries("amd64")]
    assert out.splitlines() == paths
    assert os.readlink(target / "run") == "var/run"
    assert not [p for p in target.rglob("*fpvm-tmp*")]
    assert overlay_cli(target) == (0, "", "")
