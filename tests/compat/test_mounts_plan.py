"""Boot-time mounts: fpvm's mount table and podman's ``*.mount`` units -> p9fs, on every boot."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from compat_support import AnsweringRunner, sysctl_tags

from fpvm.guest.context import make_context
from fpvm.guest.mounts import (
    MOUNTS_TABLE,
    SYSCTL_TAGS_ARGV,
    MountAction,
    MountError,
    plan_mounts,
    request_from_unit,
    requests_from_table,
)
from fpvm.guest.rootfs import RootFS
from fpvm.guest.runner import Result
from fpvm.ignition.model import Config, File, Resource, Storage, Systemd, Unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KLD = ["/sbin/kldload", "-n", "virtio_p9fs"]


def config(units: list[dict[str, Any]] | None = None, table: dict[str, Any] | str | None = None) -> Config:
    files = []
    if table is not None:
        text = table if isinstance(table, str) else json.dumps(table)
        files.append(File(path=MOUNTS_TABLE, contents=Resource(source="data:," + urllib.parse.quote(text))))
    return Config(systemd=Systemd(units=[Unit(**u) for u in units or []]), storage=Storage(files=files))


def podman_units(name: str) -> list[dict[str, Any]]:
    path = FIXTURES / "podman-ignition" / name
    if not path.exists():
        pytest.fail(f"fixture {path} missing")
    data = json.loads(path.read_text())
    return list(data["systemd"]["units"])


def apply(plan: list[Any], root: Path, runner: AnsweringRunner) -> list[bool]:
    ctx = make_context(str(root), runner=runner)
    return [a.apply(ctx) for a in plan] + [ctx.log.flush(ctx.root) is None]


def test_podman_5_8_applehv_units_become_p9fs_mounts_when_tags_exist(tmp_path: Path) -> None:
    cfg = config(podman_units("v5.8.2-applehv-macvols.ign"))
    plan = plan_mounts(cfg, RootFS(tmp_path))
    mounts = [a for a in plan if isinstance(a, MountAction)]
    assert [(m.req.tag, m.req.target, m.req.fstype) for m in mounts] == [
        ("a2a0ee2c717462feb1de2f5afd59de5fd2d8", "/Users", "virtiofs"),
        ("71708eb255bc230cd7c91dd26f7667a7b938", "/private", "virtiofs"),
        ("a0bb3a2c8b0b02ba5958b0576f0d6530e104", "/var/folders", "virtiofs"),
    ]
    # the host offers /Users and /private as 9p devices with the same tags, not /var/folders
    runner = AnsweringRunner(
        answers={tuple(SYSCTL_TAGS_ARGV): sysctl_tags(mounts[0].req.tag, mounts[1].req.tag)}
    )
    apply(plan, tmp_path, runner)
    assert [c for c in runner.commands if c[0] != "/sbin/sysctl"] == [
        KLD,
        ["/sbin/mount", "-t", "p9fs", mounts[0].req.tag, "/Users"],
        ["/sbin/mount", "-t", "p9fs", mounts[1].req.tag, "/private"],
    ]
    assert (tmp_path / "Users").is_dir() and not (tmp_path / "var/folders").exists()
    log = (tmp_path / "var/log/fpvm.log").read_text()
    assert "a0bb3a2c8b0b02ba5958b0576f0d6530e104" in log and "no virtio-fs driver" in log


def test_table_from_the_config_and_again_from_the_root_on_the_next_boot(tmp_path: Path) -> None:
    table = {
        "mounts": [
            {"tag": "fpvm0", "target": "/Users/me/src"},
            {"tag": "fpvm1", "target": "/data", "readonly": True},
        ]
    }
    expected = [
        KLD,
        ["/sbin/mount", "-t", "p9fs", "fpvm0", "/Users/me/src"],
        ["/sbin/mount", "-t", "p9fs", "-o", "ro", "fpvm1", "/data"],
    ]
    runner = AnsweringRunner()
    apply(plan_mounts(config(table=table), RootFS(tmp_path)), tmp_path, runner)
    assert runner.commands == expected
    # next boot without an Ignition config (first-boot-only providers): the table in the root
    (tmp_path / "usr/local/etc/fpvm").mkdir(parents=True)
    (tmp_path / "usr/local/etc/fpvm/mounts.json").write_text(json.dumps(table))
    runner = AnsweringRunner()
    apply(plan_mounts(config(), RootFS(tmp_path)), tmp_path, runner)
    assert runner.commands == expected


def test_live_boot_skips_what_is_already_mounted(tmp_path: Path) -> None:
    table = {"mounts": [{"tag": "fpvm0", "target": "/src"}, {"tag": "fpvm1", "target": "/data"}]}
    runner = AnsweringRunner(
        answers={
            ("/sbin/mount", "-p"): Result(0, b"/dev/vtbd0p2\t/\tufs\trw\t1 1\nfpvm0\t/src\tp9fs\trw\t0 0\n")
        }
    )
    runner.recording = False
    apply(plan_mounts(config(table=table), RootFS(tmp_path)), tmp_path, runner)
    mounts = [c for c in runner.commands if c[0] == "/sbin/mount" and c[1] == "-t"]
    assert mounts == [["/sbin/mount", "-t", "p9fs", "fpvm1", "/data"]]


def test_mount_failure_is_logged_and_the_boot_goes_on(tmp_path: Path) -> None:
    table = {"mounts": [{"tag": "fpvm0", "target": "/a"}, {"tag": "fpvm1", "target": "/b"}]}
    runner = AnsweringRunner(
        answers={
            ("/sbin/mount", "-t", "p9fs", "fpvm0", "/a"): Result(1, b"", b"mount: fpvm0: Invalid argument\n"),
            tuple(SYSCTL_TAGS_ARGV): sysctl_tags("fpvm1"),
        }
    )
    results = apply(plan_mounts(config(table=table), RootFS(tmp_path)), tmp_path, runner)
    assert results[1:3] == [False, True]
    assert (
        "no 9p device with tag 'fpvm0' (the host offers: fpvm1)"
        in (tmp_path / "var/log/fpvm.log").read_text()
    )


def test_disabled_units_and_other_units_are_not_mounted(tmp_path: Path) -> None:
    unit = "[Mount]\nWhat=t1\nWhere=/x\nType=virtiofs\n"
    cfg = config(
        [
            {"name": "x.mount", "contents": unit, "enabled": False},
            {"name": "a.service", "contents": "[Service]\n"},
        ]
    )
    plan = plan_mounts(cfg, RootFS(tmp_path))
    assert [a.kind for a in plan] == ["note"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("{", "not valid JSON"),
        ({"mounts": {}}, "$.mounts must be a list"),
        ({"mounts": [{"tag": "a", "target": "/x", "ro": True}]}, "$.mounts[0]: unknown key 'ro'"),
        ({"mounts": [{"target": "/x"}]}, "$.mounts[0].tag: missing"),
        ({"mounts": [{"tag": "a"}]}, "$.mounts[0].target: missing"),
        (
            {"mounts": [{"tag": "a", "target": "/x", "readonly": "yes"}]},
            "$.mounts[0].readonly: must be true or false",
        ),
        (
            {"mounts": [{"tag": "a", "target": "/my src"}]},
            "$.mounts[0]: mount point '/my src' contains a space",
        ),
        ({"mounts": [{"tag": "a;b", "target": "/x"}]}, "$.mounts[0]: tag 'a;b'"),
        (
            {"mounts": [{"tag": "a", "target": "/x"}, {"tag": "a", "target": "/y"}]},
            "tag 'a' is already mounted",
        ),
        (
            {"mounts": [{"tag": "a", "target": "/x"}, {"tag": "b", "target": "/x/"}]},
            "/x is already the mount point",
        ),
    ],
)
def test_bad_tables_are_refused_before_anything_is_mounted(
    tmp_path: Path, table: dict[str, Any] | str, message: str
) -> None:
    with pytest.raises(MountError, match=None) as info:
        plan_mounts(config(table=table), RootFS(tmp_path))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        ("[Unit]\n", "has no [Mount] section"),
        ("[Mount]\nWhat=t\nWhere=/x\nType=nfs\n", "mount type 'nfs' is not supported"),
        ("[Mount]\nWhat=t\nWhere=/x\nType=virtiofs\nOptions=uid=0\n", "unknown mount option 'uid=0'"),
        ("[Mount]\nWhere=/x\nType=virtiofs\n", "What=: unit u.mount"),
        ("[Mount]\nWhat=t\nWhere=/a b\nType=virtiofs\n", "Where=: mount point '/a b' contains a space"),
    ],
)
def test_bad_mount_units(unit: str, message: str) -> None:
    with pytest.raises(MountError) as info:
        request_from_unit("u.mount", unit, "$.systemd.units[0]")
    assert message in str(info.value) or message.split(": ")[0] in str(info.value)


def test_read_only_unit_option() -> None:
    req = request_from_unit("d.mount", "[Mount]\nWhat=t\nWhere=/d\nType=9p\nOptions=trans=virtio,ro\n", "u")
    assert req.readonly and req.argv() == ["/sbin/mount", "-t", "p9fs", "-o", "ro", "t", "/d"]


def test_table_parser_accepts_the_documented_shape() -> None:
    reqs = requests_from_table(
        b'{"mounts": [{"tag": "fpvm0", "target": "/Users/me/src", "readonly": false}]}'
    )
    assert [(r.tag, r.target, r.readonly) for r in reqs] == [("fpvm0", "/Users/me/src", False)]


def test_a_boot_without_any_config_mounts_the_table_in_the_root(tmp_path: Path) -> None:
    (tmp_path / "usr/local/etc/fpvm").mkdir(parents=True)
    (tmp_path / "usr/local/etc/fpvm/mounts.json").write_text('{"mounts": [{"tag": "fpvm0", "target": "/w"}]}')
    runner = AnsweringRunner()
    apply(plan_mounts(None, RootFS(tmp_path)), tmp_path, runner)
    assert runner.commands == [KLD, ["/sbin/mount", "-t", "p9fs", "fpvm0", "/w"]]
    assert plan_mounts(None, RootFS(tmp_path / "empty")) == []
