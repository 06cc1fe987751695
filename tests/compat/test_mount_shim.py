"""The ``mount`` shim: podman's Linux mount lines -> FreeBSD p9fs commands (recorded).

Expected FreeBSD syntax, from the FreeBSD 15 man pages: kldload(8) ``kldload [-nqv] file ...``
(``-n``: do not try to load module if already loaded); p9fs(4) ``mount -t p9fs mysharename /mnt``;
mount(8) ``mount [-o options] -t type special node``; sysctl(8) ``-e`` prints ``name=value``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from compat_support import AnsweringRunner, sysctl_tags

from fpvm.guest.compat import main
from fpvm.guest.compat.base import Shim
from fpvm.guest.compat.mount import run
from fpvm.guest.mounts import KLDLOAD_ARGV, SYSCTL_TAGS_ARGV
from fpvm.guest.rootfs import RootFS
from fpvm.guest.runner import Result

KLD = ["/sbin/kldload", "-n", "virtio_p9fs"]
SHA_TAG = "a2a0ee2c717462feb1de2f5afd59de5fd2d8"  # podman 5.x: sha256("/Users")[:36]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    for d in ("tmp", "home/user", "Users", "mnt/my dir"):
        (r / d).mkdir(parents=True)
    return r


def shim(root: Path, runner: AnsweringRunner) -> tuple[Shim, io.StringIO]:
    err = io.StringIO()
    return Shim("mount", RootFS(root), runner, err=err, out=io.StringIO()), err


def record(root: Path, tmp_path: Path, *args: str) -> tuple[int, list[list[str]]]:
    rec = tmp_path / "rec.jsonl"
    rec.unlink(missing_ok=True)
    rc = main(["--record", str(rec), "--root", str(root), "mount", *args])
    lines = rec.read_text().splitlines() if rec.exists() else []
    return rc, [json.loads(line)["argv"] for line in lines]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # podman 4.x (the capture in tests/fixtures/podman-4.3.1-qemu-capture)
        (
            ["-t", "9p", "-o", "trans=virtio", "vol0", "/tmp", "-o", "version=9p2000.L,msize=131072"],
            ["/sbin/mount", "-t", "p9fs", "vol0", "/tmp"],
        ),
        (
            [
                "-t",
                "9p",
                "-o",
                "trans=virtio",
                "vol1",
                "/home/user",
                "-o",
                "version=9p2000.L,msize=131072",
                "-o",
                "ro",
            ],
            ["/sbin/mount", "-t", "p9fs", "-o", "ro", "vol1", "/home/user"],
        ),
        # podman 5.0-5.1 adds cache=mmap
        (
            [
                "-t",
                "9p",
                "-o",
                "trans=virtio",
                "vol0",
                "/tmp",
                "-o",
                "version=9p2000.L,msize=131072,cache=mmap",
            ],
            ["/sbin/mount", "-t", "p9fs", "vol0", "/tmp"],
        ),
        # glued option forms behave the same
        (
            ["-t9p", "-otrans=virtio,ro", "vol0", "/tmp/"],
            ["/sbin/mount", "-t", "p9fs", "-o", "ro", "vol0", "/tmp"],
        ),
    ],
)
def test_9p_becomes_kldload_then_p9fs(
    root: Path, tmp_path: Path, args: list[str], expected: list[str]
) -> None:
    rc, cmds = record(root, tmp_path, *args)
    assert rc == 0
    assert cmds == [KLD, expected]


def test_virtiofs_with_a_9p_device_of_that_tag_mounts_p9fs(root: Path) -> None:
    runner = AnsweringRunner(answers={tuple(SYSCTL_TAGS_ARGV): sysctl_tags("vol0", SHA_TAG)})
    s, err = shim(root, runner)
    # podman 5.2+: sudo mount -t virtiofs <tag> "<target>" -o context="system_u:object_r:nfs_t:s0"
    rc = run(s, ["-t", "virtiofs", SHA_TAG, "/Users", "-o", 'context="system_u:object_r:nfs_t:s0",ro'])
    assert rc == 0, err.getvalue()
    assert runner.commands == [
        KLD,
        SYSCTL_TAGS_ARGV,
        ["/sbin/mount", "-t", "p9fs", "-o", "ro", SHA_TAG, "/Users"],
    ]


def test_virtiofs_without_a_9p_device_fails_naming_the_cause(root: Path) -> None:
    runner = AnsweringRunner(answers={tuple(SYSCTL_TAGS_ARGV): sysctl_tags("vol0")})
    s, err = shim(root, runner)
    rc = run(s, ["-t", "virtiofs", SHA_TAG, "/Users", "-o", "context=system_u:object_r:nfs_t:s0"])
    assert rc != 0
    msg = err.getvalue()
    assert SHA_TAG in msg and "no 9p device offers that tag" in msg and "no virtio-fs driver" in msg
    assert not any(c[0] == "/sbin/mount" for c in runner.commands)


def test_virtiofs_when_sysctl_node_is_absent(root: Path) -> None:
    runner = AnsweringRunner(
        answers={tuple(SYSCTL_TAGS_ARGV): Result(1, b"", b"sysctl: unknown oid 'dev.virtio_p9fs'\n")}
    )
    s, err = shim(root, runner)
    assert run(s, ["-t", "virtiofs", SHA_TAG, "/Users"]) == 1
    assert "no virtio-fs driver" in err.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-t", "9p", "-o", "trans=virtio,uname=me", "vol0", "/tmp"], "unknown option 'uname=me' for -t 9p"),
        (["-t", "9p", "-o", "trans=tcp", "vol0", "/tmp"], "needs -o trans=virtio (got trans=tcp)"),
        (["-t", "9p", "vol0", "/tmp"], "needs -o trans=virtio"),
        (["-t", "9p", "-o", "trans=virtio", "/tmp"], "needs a tag and a mount point, got 1"),
        (["-t", "9p", "-o", "trans=virtio", "vol0", "/tmp", "/x"], "only a tag and a mount point, got 3"),
        (["-t", "9p", "-o", "trans=virtio", "", "/tmp"], "missing tag"),
        (["-t", "9p", "-o", "trans=virtio", "vol 0", "/tmp"], "tag 'vol 0'"),
        (["-t", "9p", "-o", "trans=virtio", "vol0", "/mnt/my dir"], "contains a space"),
        (["-t", "9p", "-o", "trans=virtio", "vol0", '"/tmp"'], "contains a double quote"),
        (["-t", "9p", "-o", "trans=virtio", "vol0", "/tmp/it's"], "contains a single quote"),
        (["-t", "9p", "-o", "trans=virtio", "vol0", "tmp"], "not an absolute path"),
        (["-t", "9p", "-o", "trans=virtio", "vol0", "/tmp/../etc"], "'.' or '..'"),
        (["-t", "9p", "-o", "trans=virtio", "vol0", "/"], "refusing to mount over /"),
        (["-t", "9p", "-o", "trans=virtio", "vol0", "/nonexistent"], "/nonexistent does not exist"),
        (["-t", "9p", "-v", "-o", "trans=virtio", "vol0", "/tmp"], "unsupported option '-v'"),
        (["-t", "9p", "-o"], "option -o needs a value"),
        (
            ["-t", "virtiofs", SHA_TAG, "/Users", "-o", "uid=1000"],
            "unknown option 'uid=1000' for -t virtiofs",
        ),
        (["-t", "virtiofs", SHA_TAG, "/Users", "-o", 'context="a,b'], "unbalanced double quote"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(
    root: Path, tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, cmds = record(root, tmp_path, *args)
    assert rc == 1
    assert cmds == []  # no kldload, no mount: nothing half-done
    assert message in capsys.readouterr().err


def test_failed_mount_of_unknown_tag_is_explained(root: Path) -> None:
    mount_argv = ("/sbin/mount", "-t", "p9fs", "vol9", "/tmp")
    runner = AnsweringRunner(
        answers={
            mount_argv: Result(1, b"", b"mount: vol9: Invalid argument\n"),
            tuple(SYSCTL_TAGS_ARGV): sysctl_tags("vol0", "vol1"),
        }
    )
    s, err = shim(root, runner)
    assert run(s, ["-t", "9p", "-o", "trans=virtio", "vol9", "/tmp"]) == 1
    assert "no 9p device with tag 'vol9' (the host offers: vol0, vol1)" in err.getvalue()


def test_read_only_share_mounted_read_write_is_explained(root: Path) -> None:
    mount_argv = ("/sbin/mount", "-t", "p9fs", "vol1", "/tmp")
    runner = AnsweringRunner(answers={mount_argv: Result(1, b"", b"mount: vol1: Read-only file system\n")})
    s, err = shim(root, runner)
    assert run(s, ["-t", "9p", "-o", "trans=virtio", "vol1", "/tmp"]) == 1
    assert "shares 'vol1' read-only; mount it with -o ro" in err.getvalue()


def test_kldload_failure_stops_before_mounting(root: Path) -> None:
    runner = AnsweringRunner(
        answers={tuple(KLDLOAD_ARGV): Result(1, b"", b"kldload: can't load virtio_p9fs\n")}
    )
    s, err = shim(root, runner)
    assert run(s, ["-t", "9p", "-o", "trans=virtio", "vol0", "/tmp"]) == 1
    assert runner.commands == [KLD]
    assert "cannot load virtio_p9fs" in err.getvalue()


@pytest.mark.parametrize(
    "args",
    [[], ["-p"], ["-t", "nfs", "-o", "ro", "host:/x", "/mnt"], ["-a", "-t", "ufs"], ["/dev/ada0p2", "/mnt"]],
)
def test_everything_else_goes_to_sbin_mount_unchanged(root: Path, tmp_path: Path, args: list[str]) -> None:
    rc, cmds = record(root, tmp_path, *args)
    assert rc == 0
    assert cmds == [["/sbin/mount", *args]]


def test_passthrough_keeps_output_and_status(root: Path) -> None:
    runner = AnsweringRunner(
        answers={("/sbin/mount", "-p"): Result(3, b"/dev/vtbd0p2\t/\tufs\trw\t1 1\n", b"warn\n")}
    )
    out, err = io.StringIO(), io.StringIO()
    s = Shim("mount", RootFS(root), runner, err=err, out=out)
    assert run(s, ["-p"]) == 3
    assert out.getvalue() == "/dev/vtbd0p2\t/\tufs\trw\t1 1\n" and err.getvalue() == "warn\n"


def test_log_lines_go_to_the_roots_fpvm_log(root: Path, tmp_path: Path) -> None:
    record(root, tmp_path, "-t", "9p", "-o", "trans=virtio", "vol0", "/tmp")
    log = (root / "var/log/fpvm.log").read_text()
    assert "linux-compat mount: mounted vol0 at /tmp (asked: -t 9p)" in log


def test_second_mount_of_a_tag_is_explained(root: Path) -> None:
    # virtio_p9fs serves one mount per channel: a second mount of the same tag returns EBUSY
    mount_argv = ("/sbin/mount", "-t", "p9fs", "vol0", "/home/user")
    runner = AnsweringRunner(
        answers={
            mount_argv: Result(1, b"", b"mount: vol0: Device busy\n"),
            tuple(SYSCTL_TAGS_ARGV): sysctl_tags("vol0"),
        }
    )
    s, err = shim(root, runner)
    assert run(s, ["-t", "9p", "-o", "trans=virtio", "vol0", "/home/user"]) == 1
    assert "9p tag 'vol0' is already mounted elsewhere (one mount per tag)" in err.getvalue()


def test_mount_shim_loads_no_heavy_modules(tmp_path: Path) -> None:
    """Every volume podman mounts starts a shim: the mount path must not import typing, dataclasses
    (with inspect) or base64, which took about a third of its start-up (see docs/guest.md)."""
    import subprocess
    import sys

    (tmp_path / "mnt").mkdir()
    heavy = ("typing", "dataclasses", "inspect", "base64")
    code = (
        "import sys\n"
        "from fpvm.guest.compat import main\n"
        f"rc = main(['--record', {str(tmp_path / 'rec')!r}, '--root', {str(tmp_path)!r}, 'mount', '-t', '9p',"
        " '-o', 'trans=virtio', 'vol0', '/mnt'])\n"
        f"print(rc, sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split(None, 1) == ["0", "[]\n"]
    assert [json.loads(line)["argv"][:3] for line in (tmp_path / "rec").read_text().splitlines()] == [
        KLDLOAD_ARGV[:3],
        ["/sbin/mount", "-t", "p9fs"],
    ]
