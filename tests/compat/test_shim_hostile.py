"""Hostile input to the linux-compat shims: bounded reads, one-line errors, nothing outside the root.

The shims run as root for whatever podman (or anyone with sudo) passes; no argv and no file in the
root may end in a traceback, a hang or unbounded memory. The property test throws arbitrary argv at
every shim on a staged root with a sentinel tree beside it.
"""

from __future__ import annotations

import contextlib
import io
import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpvm.guest.compat import COMMANDS, main
from fpvm_support import deadline


def run_shim(root: Path, rec: Path, *argv: str) -> tuple[int, str]:
    """(exit status, stderr) of one shim run in-process, recording commands to ``rec``."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["--record", str(rec), "--root", str(root), *argv])
    return rc, err.getvalue()


def staged(base: Path) -> Path:
    root = base / "root"
    for d in ("etc/tmpfiles.d", "var/run/podman", "var/log", "mnt/share", "etc/environment.d"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "run").symlink_to("var/run")
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return staged(tmp_path)


def one_line(text: str) -> None:
    assert "Traceback" not in text
    lines = text.splitlines()
    assert lines and all(len(line) < 10_000 for line in lines), text[:300]


@pytest.mark.parametrize("target", ["/mnt/" + "a" * 300, "/" + "d/" * 50_000, "/mnt/" + "x" * 100_000])
def test_mount_with_an_overlong_target_is_one_line_exit_1(root: Path, tmp_path: Path, target: str) -> None:
    rc, err = run_shim(root, tmp_path / "rec", "mount", "-t", "9p", "-o", "trans=virtio", "fpvm0", target)
    assert rc == 1
    one_line(err)
    assert not (tmp_path / "rec").exists()  # nothing was run


def test_chattr_with_an_overlong_path_is_one_line_exit_1(root: Path, tmp_path: Path) -> None:
    rc, err = run_shim(root, tmp_path / "rec", "chattr", "-i", "/" + "b" * 300)
    assert rc == 1
    one_line(err)


def test_tmpfiles_does_not_read_a_fifo(root: Path, tmp_path: Path) -> None:
    os.mkfifo(root / "etc/tmpfiles.d/podman-docker.conf")
    with deadline(20):
        rc, err = run_shim(root, tmp_path / "rec", "systemd-tmpfiles", "--create")
    assert rc == 1
    one_line(err)
    assert "FIFO" in err


def test_tmpfiles_named_config_is_never_a_device(root: Path, tmp_path: Path) -> None:
    """A config that names a device (/dev/zero on the live root) is refused, not read until MemoryError."""
    (root / "dev").mkdir()
    os.mkfifo(root / "dev/zero")  # a FIFO stands in: a char device node needs a devfs-capable mount
    with deadline(20):
        rc, err = run_shim(root, tmp_path / "rec", "systemd-tmpfiles", "--create", "/dev/zero")
    assert rc == 1
    one_line(err)


def test_tmpfiles_reads_a_bounded_amount(root: Path, tmp_path: Path) -> None:
    big = root / "etc/tmpfiles.d/big.conf"
    with open(big, "wb") as fh:
        fh.truncate(8 * 1024**3)  # sparse: 8 GiB that cost no disk, but would fill memory if read
    rc, err = run_shim(root, tmp_path / "rec", "systemd-tmpfiles", "--create")
    assert rc == 1
    one_line(err)
    assert "limit" in err


def test_shim_messages_are_escaped(root: Path, tmp_path: Path) -> None:
    rc, err = run_shim(root, tmp_path / "rec", "chattr", "-i", "/nope\x1b[2J\nFORGED line")
    assert rc == 1
    assert "\x1b" not in err and "\nFORGED" not in err
    assert "\\e[2J" in err
    log = (root / "var/log/fpvm.log").read_text()
    assert "\x1b" not in log and "\nFORGED" not in log


def test_shim_log_fifo_does_not_hang(root: Path, tmp_path: Path) -> None:
    os.mkfifo(root / "var/log/fpvm.log")
    with deadline(20):
        rc, err = run_shim(root, tmp_path / "rec", "chattr", "-i", "/missing")
    assert rc == 1
    one_line(err)


# -- property: arbitrary argv -----------------------------------------------------------------------------
def _tree(base: Path) -> dict[str, tuple[int, int, bytes | str]]:
    out: dict[str, tuple[int, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            body: bytes | str = os.readlink(p) if os.path.islink(p) else b""
            if os.path.isfile(p) and not os.path.islink(p):
                body = Path(p).read_bytes()
            out[os.path.relpath(p, base)] = (st.st_mode, st.st_nlink, body)
    return out


WORDS = st.sampled_from(
    [
        "-t", "9p", "virtiofs", "-o", "trans=virtio", "ro", "--create", "--prefix", "--prefix=/run",
        "daemon-reload", "enable", "start", "podman.socket", "sshd", "--now", "+i", "-i", "=i", "/",
        "/etc", "/mnt/share", "/run/docker.sock", "/dev/zero", "..", "/../..", "fpvm0", "-", "--",
        "/etc/tmpfiles.d/x.conf", "/" + "a" * 300, "/" + "b/" * 3000, "\x1b[2J", "a\nb", "\x00",
    ]
)  # fmt: skip
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
ARG = st.one_of(WORDS, TEXT, st.text(alphabet=string.printable, max_size=400))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(COMMANDS)), args=st.lists(ARG, max_size=8))
def test_any_argv_to_any_shim_ends_in_0_1_2_and_stays_in_the_root(
    tmp_path_factory: pytest.TempPathFactory, name: str, args: list[str]
) -> None:
    base = tmp_path_factory.mktemp("hostile")
    root = staged(base)
    (base / "sentinel").mkdir()
    (base / "sentinel/secret").write_text("keep")
    os.link(base / "sentinel/secret", root / "etc/tmpfiles.d/linked.conf")  # a planted hard link
    (root / "etc/tmpfiles.d/x.conf").write_text("L+ /run/docker.sock - - - - /run/podman/podman.sock\n")
    rec = base / "rec.jsonl"
    outside = {k: v for k, v in _tree(base).items() if not k.startswith("root")}
    err = io.StringIO()
    with deadline(60), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["--record", str(rec), "--root", str(root), name, *args])
    assert rc in (0, 1, 2)
    assert "Traceback" not in err.getvalue()
    assert "\x1b" not in err.getvalue()
    after = {k: v for k, v in _tree(base).items() if not k.startswith("root") and k != "rec.jsonl"}
    assert after == outside
