"""files/directories/links: upstream semantics, the FreeBSD mapping, and idempotent re-runs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from guest_support import make_root, minimal, provision, snapshot, write_config

from fpvm.guest.context import make_context
from fpvm.guest.plan import PlanError, PlanOptions, build_plan
from fpvm.guest.storage import classify
from fpvm.ignition import parse


def _file(path: str, data: bytes | None, **extra: Any) -> dict[str, Any]:
    contents = {} if data is None else {"source": "data:," + urllib.parse.quote(data)}
    return {"path": path, "contents": contents, **extra}


def _apply(root: Path, cfg: dict[str, Any]) -> Any:
    ctx = make_context(str(root), record=str(root.parent / "rec.jsonl"))
    actions = build_plan(parse(json.dumps(cfg).encode()), PlanOptions(root=ctx.root))
    changed = [a.apply(ctx) for a in actions]
    ctx.state.save(ctx.root)  # the append record lives in the state, as in provision
    ctx.log.flush(ctx.root)
    return ctx, changed


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path)


def test_classify_table() -> None:
    assert classify("/etc/containers/registries.conf").paths == ("/usr/local/etc/containers/registries.conf",)
    assert classify("/etc/containers/podman-machine").paths == (
        "/etc/containers/podman-machine",
        "/usr/local/etc/containers/podman-machine",
    )
    assert classify("/etc/podman-machine").paths == ("/etc/podman-machine",)
    for linux in (
        "/etc/systemd/system/x.service",
        "/usr/lib/tmpfiles.d/a.conf",
        "/etc/sysctl.d/10.conf",
        "/etc/chrony.conf",
        "/etc/chrony.d/x",
        "/etc/environment.d",
        "/var/lib/systemd/linger/core",
        "/home/core/.config/systemd/user/x.service",
    ):
        assert classify(linux).disposition == "ignore", linux
    assert classify("/etc/containersX").paths == ("/etc/containersX",)
    assert classify("/etc/subuid").disposition == "apply"
    assert classify("/etc/tmpfiles.d/podman-docker.conf").paths == ("/etc/tmpfiles.d/podman-docker.conf",)


def test_append_is_applied_once(root: Path) -> None:
    (root / "etc/chrony.conf").write_text("pool x\n")  # Linux-only: left untouched
    (root / "etc/motd").write_text("hello\n")
    cfg = minimal(
        storage={
            "files": [
                {"path": "/etc/motd", "append": [{"source": "data:,%0Aconfdir%20%2Fetc%2Fx%0A"}]},
                {"path": "/etc/chrony.conf", "append": [{"source": "data:,x"}]},
            ]
        }
    )
    _apply(root, cfg)
    assert (root / "etc/motd").read_text() == "hello\n\nconfdir /etc/x\n"
    _, changed = _apply(root, cfg)
    assert (root / "etc/motd").read_text() == "hello\n\nconfdir /etc/x\n"
    assert not any(changed)
    assert (root / "etc/chrony.conf").read_text() == "pool x\n"


def test_file_without_source_created_empty_or_kept(root: Path) -> None:
    (root / "etc/keep").write_bytes(b"old")
    _apply(root, minimal(storage={"files": [_file("/etc/new", None), _file("/etc/keep", None, mode=0o600)]}))
    assert (root / "etc/new").read_bytes() == b""
    assert stat.S_IMODE((root / "etc/new").stat().st_mode) == 0o644
    assert (root / "etc/keep").read_bytes() == b"old"
    assert stat.S_IMODE((root / "etc/keep").stat().st_mode) == 0o600


def test_overwrite_true_replaces_and_special_bits_kept(root: Path) -> None:
    (root / "etc/x").write_bytes(b"old")
    cfg = minimal(storage={"files": [_file("/etc/x", b"new", overwrite=True, mode=0o4755)]})
    cfg["ignition"]["version"] = "3.6.0"  # set-id bits are honoured from spec 3.6.0 on
    _apply(root, cfg)
    assert (root / "etc/x").read_bytes() == b"new"
    assert stat.S_IMODE((root / "etc/x").stat().st_mode) == 0o4755


def test_directory_modes_and_parents(root: Path) -> None:
    old = os.umask(0o077)
    try:
        _apply(root, minimal(storage={"directories": [{"path": "/srv/a/b", "mode": 0o700}]}))
    finally:
        os.umask(old)
    assert stat.S_IMODE((root / "srv").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "srv/a").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "srv/a/b").stat().st_mode) == 0o700


def test_owner_by_id_and_by_name(root: Path) -> None:
    cfg = minimal(
        passwd={"users": [{"name": "core", "uid": 501}]},
        storage={
            "files": [
                _file("/srv/by-id", b"x", user={"id": 777}, group={"id": 20}),
                _file("/srv/by-name", b"x", user={"name": "core"}, group={"name": "operator"}),
                _file("/srv/root", b"x", user={"name": "root"}, group={"name": "root"}),
            ]
        },
    )
    ctx, _ = _apply(root, cfg)
    if ctx.root.can_chown:
        st = (root / "srv/by-id").stat()
        assert (st.st_uid, st.st_gid) == (777, 20)
        st = (root / "srv/by-name").stat()
        assert (st.st_uid, st.st_gid) == (501, 5)
        st = (root / "srv/root").stat()
        assert (st.st_uid, st.st_gid) == (0, 0)


def test_unknown_owner_fails_that_action_only(root: Path) -> None:
    conf = write_config(
        root.parent / "c.ign",
        minimal(
            storage={"files": [_file("/srv/a", b"x", user={"name": "nobody-here"}), _file("/srv/b", b"y")]}
        ),
    )
    res = provision(root, conf, root.parent / "r")
    assert res.returncode == 2
    assert "user 'nobody-here' does not exist" in res.stdout
    assert (root / "srv/b").read_bytes() == b"y"


def test_links_podman_docker_and_localtime(root: Path) -> None:
    (root / "etc/localtime").write_bytes(b"TZif-UTC-copy")  # FreeBSD images ship a copied zone file
    cfg = minimal(
        storage={
            "links": [
                {"path": "/usr/local/bin/docker", "target": "/usr/bin/podman", "overwrite": True},
                {"path": "/etc/localtime", "target": "../usr/share/zoneinfo/Europe/London"},
                {"path": "/srv/hard", "target": "/etc/motd", "hard": True},
            ],
            "files": [_file("/etc/motd", b"m")],
        }
    )
    _apply(root, cfg)
    assert os.readlink(root / "usr/local/bin/docker") == "/usr/local/bin/podman"
    assert os.readlink(root / "etc/localtime") == "../usr/share/zoneinfo/Europe/London"
    assert (root / "etc/localtime").read_bytes() == b"TZif2"  # resolves inside the root
    assert (root / "var/db/zoneinfo").read_text() == "Europe/London\n"
    assert (root / "srv/hard").stat().st_ino == (root / "etc/motd").stat().st_ino
    before = snapshot(root)
    _, changed = _apply(root, cfg)
    assert not any(changed) and snapshot(root) == before


def test_missing_zone_is_a_warning(root: Path) -> None:
    _apply(
        root,
        minimal(storage={"links": [{"path": "/etc/localtime", "target": "/usr/share/zoneinfo/Mars/Base"}]}),
    )
    assert any("is not in the root" in line for line in (root / "var/log/fpvm.log").read_text().splitlines())
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/Mars/Base"


def test_hostname_goes_to_rc_conf_d(root: Path) -> None:
    _apply(root, minimal(storage={"files": [_file("/etc/hostname", b"podman-machine-default\n")]}))
    assert not (root / "etc/hostname").exists()
    path = root / "etc/rc.conf.d/hostname"
    assert path.read_text() == 'hostname="podman-machine-default"\n'
    out = subprocess.run(
        ["sh", "-c", '. "$1"; printf %s "$hostname"', "sh", str(path)], capture_output=True, text=True
    )
    assert out.stdout == "podman-machine-default"


def test_bad_hostname_is_invalid() -> None:
    cfg = parse(json.dumps(minimal(storage={"files": [_file("/etc/hostname", b"bad host;rm\n")]})).encode())
    with pytest.raises(PlanError, match=r"\$\.storage\.files\[0\]"):
        build_plan(cfg)


def test_many_files_plan_sorted_by_depth(root: Path) -> None:
    cfg = minimal(
        storage={
            "files": [_file("/a/b/c/f", b"1")],
            "directories": [{"path": "/a/b/c", "mode": 0o750}, {"path": "/a", "mode": 0o711}],
        }
    )
    actions = build_plan(parse(json.dumps(cfg).encode()))
    assert [getattr(a, "path", "") for a in actions] == ["/a", "/a/b/c", "/a/b/c/f"]
