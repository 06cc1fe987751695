"""RootFS: guest paths stay under the root whatever the path or the root's own links say."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fpvm.guest.rootfs import RootFS, UnsafePathError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    (r / "usr/home").mkdir(parents=True)
    (r / "home").symlink_to("usr/home")  # FreeBSD's own relative link
    return r


def test_join_and_relative_link_followed(root: Path) -> None:
    fs = RootFS(root)
    assert fs.host("/etc/x") == root / "etc/x"
    assert fs.host("/home/core/.ssh") == root / "usr/home/core/.ssh"
    assert fs.write("/home/core/f", b"hi", 0o600)
    assert (root / "usr/home/core/f").read_bytes() == b"hi"


@pytest.mark.parametrize("bad", ["/../etc/passwd", "/etc/../../x", "etc/passwd", "/a/./b", "/a\0b"])
def test_dotdot_relative_and_nul_refused(root: Path, bad: str) -> None:
    with pytest.raises(UnsafePathError):
        RootFS(root).host(bad)


def test_planted_absolute_symlink_refused(tmp_path: Path, root: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "etc").mkdir()
    (root / "etc/containers").symlink_to("/")  # the planted link of the issue
    fs = RootFS(root)
    with pytest.raises(UnsafePathError, match="absolute"):
        fs.write("/etc/containers/containers.conf", b"x")
    (root / "etc/evil").symlink_to(str(outside))
    with pytest.raises(UnsafePathError):
        fs.makedirs("/etc/evil/sub")
    assert list(outside.iterdir()) == []


def test_relative_symlink_climbing_out_refused(tmp_path: Path, root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc/up").symlink_to("../../..")
    with pytest.raises(UnsafePathError, match="outside the root"):
        RootFS(root).write("/etc/up/x", b"x")
    assert not (tmp_path.parent / "x").exists()


def test_symlink_loop_refused(root: Path) -> None:
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    with pytest.raises(UnsafePathError, match="too many"):
        RootFS(root).host("/a/x")


def test_final_symlink_is_replaced_not_followed(tmp_path: Path, root: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (root / "etc").mkdir()
    (root / "etc/f").symlink_to(str(victim))
    assert RootFS(root).write("/etc/f", b"new")
    assert victim.read_bytes() == b"keep"
    assert not (root / "etc/f").is_symlink()
    assert (root / "etc/f").read_bytes() == b"new"


def test_parents_are_root_0755_and_write_is_idempotent(root: Path) -> None:
    old = os.umask(0o077)
    try:
        fs = RootFS(root)
        assert fs.write("/a/b/c/file", b"data", 0o640)
    finally:
        os.umask(old)
    for d in ("a", "a/b", "a/b/c"):
        assert stat.S_IMODE((root / d).stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "a/b/c/file").stat().st_mode) == 0o640
    before = (root / "a/b/c/file").stat()
    assert not fs.write("/a/b/c/file", b"data", 0o640)
    after = (root / "a/b/c/file").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert fs.set_attrs("/a/b/c/file", 0o600, None, None)
    assert not fs.set_attrs("/a/b/c/file", 0o600, None, None)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_ownership_applied_when_root(root: Path) -> None:
    fs = RootFS(root)
    fs.write("/f", b"x", 0o600, 501, 20)
    st = (root / "f").stat()
    assert (st.st_uid, st.st_gid) == (501, 20)
    assert fs.set_attrs("/f", None, 502, 20)
    assert not fs.set_attrs("/f", None, 502, 20)


def test_symlink_and_hardlink(root: Path) -> None:
    fs = RootFS(root)
    assert fs.symlink("/etc/localtime", "/usr/share/zoneinfo/UTC")
    assert not fs.symlink("/etc/localtime", "/usr/share/zoneinfo/UTC")
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/UTC"
    fs.write("/data", b"x")
    assert fs.hardlink("/data2", "/data")
    assert not fs.hardlink("/data2", "/data")
    assert (root / "data2").stat().st_ino == (root / "data").stat().st_ino


def test_live_root_follows_absolute_links(tmp_path: Path) -> None:
    fs = RootFS("/")
    assert fs.is_live
    assert fs.host("/etc/hostname") == Path("/etc/hostname")
