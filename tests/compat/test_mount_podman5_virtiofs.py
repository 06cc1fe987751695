"""podman 5.8.2's recorded ``mount -t virtiofs`` lines against the 9p devices fpvm's helpers offer.

The helpers (``fpvm podman-machine setup``) give QEMU one virtio-9p device per podman volume whose
mount tag is podman's 36-digit tag cut to QEMU's 31-byte limit; the guest's ``mount`` shim matches it.
Lines: tests/fixtures/podman-5.8.2-qemu-capture/volumes.json (the run stopped after the first mount;
the second is podman's same pattern with ``,ro``, as the capture notes say). Split as sh would.
"""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path

import pytest
from compat_support import AnsweringRunner, sysctl_tags

from fpvm.guest.compat.base import Shim
from fpvm.guest.compat.mount import run
from fpvm.guest.mounts import KLDLOAD_ARGV, SYSCTL_TAGS_ARGV
from fpvm.guest.rootfs import RootFS
from fpvm_support import FIXTURES

VOLUMES = json.loads((FIXTURES / "podman-5.8.2-qemu-capture" / "volumes.json").read_text())


def _mount_lines() -> list[list[str]]:
    lines = [c["command"] for c in VOLUMES["ssh_commands"] if " mount " in f" {c['command']}"]
    assert len(lines) == 1
    first = shlex.split(lines[0])
    tag2 = next(a.rsplit("tag=", 1)[1] for a in VOLUMES["qemu_argv"] if "chardev=virtiofschar1" in a)
    second = [*first[:4], tag2, "/home/user", "-o", first[-1] + ",ro"]
    return [first, second]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    for d in ("srv/share", "home/user"):
        (r / d).mkdir(parents=True)
    return r


def test_recorded_lines_mount_the_cut_tags_read_only_where_asked(root: Path) -> None:
    first, second = _mount_lines()
    assert first[:3] == ["sudo", "mount", "-t"] and first[3] == "virtiofs" and len(first[4]) == 36
    tags = [first[4], second[4]]
    runner = AnsweringRunner(answers={tuple(SYSCTL_TAGS_ARGV): sysctl_tags(*(t[:31] for t in tags))})
    for argv in (first, second):
        err = io.StringIO()
        rc = run(
            Shim("mount", RootFS(root), runner, err=err, out=io.StringIO()), argv[2:]
        )  # after sudo mount
        assert rc == 0, err.getvalue()
    mounts = [c for c in runner.commands if c[0] == "/sbin/mount"]
    assert runner.commands[0] == KLDLOAD_ARGV
    assert mounts == [
        ["/sbin/mount", "-t", "p9fs", tags[0][:31], "/srv/share"],
        ["/sbin/mount", "-t", "p9fs", "-o", "ro", tags[1][:31], "/home/user"],
    ]


def test_a_full_length_tag_still_wins_and_a_foreign_prefix_does_not_match(root: Path) -> None:
    first, _ = _mount_lines()
    tag = first[4]
    runner = AnsweringRunner(answers={tuple(SYSCTL_TAGS_ARGV): sysctl_tags(tag, tag[:31])})
    assert run(Shim("mount", RootFS(root), runner, err=io.StringIO(), out=io.StringIO()), first[2:]) == 0
    assert runner.commands[-1] == ["/sbin/mount", "-t", "p9fs", tag, "/srv/share"]
    # a 31-byte device that is not the start of the asked tag is not taken
    runner = AnsweringRunner(answers={tuple(SYSCTL_TAGS_ARGV): sysctl_tags("f" * 31)})
    err = io.StringIO()
    assert run(Shim("mount", RootFS(root), runner, err=err, out=io.StringIO()), first[2:]) == 1
    assert "no 9p device offers that tag" in err.getvalue()
    assert not any(c[0] == "/sbin/mount" for c in runner.commands)
