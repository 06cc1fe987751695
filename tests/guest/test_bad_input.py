"""Bad input through the CLI contract: invalid configs apply nothing; nothing leaves the root."""

from __future__ import annotations

import base64
import gzip
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from guest_support import make_root, minimal, provision, snapshot, write_config

from fpvm.guest.plan import PlanOptions, UnreadableFile, build_plan
from fpvm.ignition import parse


def _file(path: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"path": path, "contents": {"source": "data:," + urllib.parse.quote(data)}, **extra}


def _provision(tmp_path: Path, cfg: dict[str, Any] | bytes) -> tuple[Path, Any, dict[str, Any], Path]:
    root = make_root(tmp_path)
    before = snapshot(root)
    conf = tmp_path / "config.ign"
    if isinstance(cfg, bytes):
        conf.write_bytes(cfg)
    else:
        write_config(conf, cfg)
    rec = tmp_path / "rec.jsonl"
    res = provision(root, conf, rec)
    return root, res, before, rec


USER = {"name": "core", "uid": 501, "sshAuthorizedKeys": ["ssh-ed25519 AAAA k"]}


@pytest.mark.parametrize(
    "cfg",
    [
        b"{not json",
        b'{"ignition": {"version": "9.9.9"}}',
        json.dumps(minimal(storage={"files": [_file("relative/path", b"x")]})).encode(),
        json.dumps(minimal(passwd={"users": [USER, {"name": "bad name"}]})).encode(),
    ],
    ids=["not-json", "unknown-version", "relative-path", "bad-user-name"],
)
def test_invalid_config_applies_nothing(tmp_path: Path, cfg: bytes) -> None:
    root, res, before, rec = _provision(tmp_path, cfg)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "nothing applied" in res.stderr or "invalid" in res.stderr
    assert "Traceback" not in res.stderr
    assert snapshot(root, exclude=()) == before
    assert not rec.exists()


def test_bad_user_name_names_the_json_path(tmp_path: Path) -> None:
    _, res, _, _ = _provision(tmp_path, minimal(passwd={"users": [USER, {"name": "a:b"}]}))
    assert res.returncode == 1
    assert "$.passwd.users[1].name" in res.stderr


@pytest.mark.parametrize("path", ["/../outside", "/etc/containers/../../../outside"])
def test_dotdot_paths_are_invalid(tmp_path: Path, path: str) -> None:
    root, res, before, _ = _provision(tmp_path, minimal(storage={"files": [_file(path, b"x")]}))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "$.storage.files[0].path" in res.stderr
    assert snapshot(root, exclude=()) == before
    assert not (tmp_path / "outside").exists()


def test_gzip_bomb_is_not_written_and_the_rest_applies(tmp_path: Path) -> None:
    bomb = gzip.compress(b"\0" * (65 * 1024 * 1024), compresslevel=9)
    source = "data:;base64," + base64.b64encode(bomb).decode()
    cfg = minimal(
        passwd={"users": [USER]},
        storage={"files": [{"path": "/big", "contents": {"source": source, "compression": "gzip"}}]},
    )
    root, res, _, rec = _provision(tmp_path, cfg)
    assert res.returncode == 2, res.stdout + res.stderr  # applied what it could, reported the rest
    assert "FAILED: file /big: cannot be read: $.storage.files[0].contents: decompressed" in res.stdout
    assert "limit of 67108864 bytes" in res.stdout
    assert not (root / "big").exists()
    assert "core" in rec.read_text()  # the user was still created


def test_large_plain_data_url_over_the_limit(tmp_path: Path) -> None:
    cfg = parse(json.dumps(minimal(storage={"files": [_file("/big", b"y" * 5000)]})).encode())
    [unreadable] = [
        a for a in build_plan(cfg, PlanOptions(max_file_size=4096)) if isinstance(a, UnreadableFile)
    ]
    assert (
        unreadable.error
        == "$.storage.files[0].contents: resource of 5000 bytes is larger than the limit of 4096 bytes"
    )
    assert not any(isinstance(a, UnreadableFile) for a in build_plan(cfg, PlanOptions(max_file_size=5000)))


def test_verification_hash_checked(tmp_path: Path) -> None:
    bad = {"hash": "sha512-" + "0" * 128}
    cfg = parse(json.dumps(minimal(storage={"files": [_file("/f", b"x", contents=None)]})).encode())
    cfg.storage.files[0].contents.verification.hash = bad["hash"]
    cfg.storage.files[0].contents.source = "data:,x"
    [unreadable] = [a for a in build_plan(cfg) if isinstance(a, UnreadableFile)]
    assert unreadable.error.startswith("$.storage.files[0].contents: hash verification failed")


def test_planted_symlink_in_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = make_root(tmp_path)
    # planted links at both places podman's /etc/containers files land: FreeBSD's and the marker's
    (root / "etc/containers").symlink_to(str(outside))
    (root / "usr/local/etc/containers").symlink_to("/")
    files = [
        _file("/etc/containers/containers.conf", b"[engine]\n"),
        _file("/etc/containers/podman-machine", b"qemu\n"),
        _file("/etc/ok", b"ok"),
    ]
    conf = write_config(tmp_path / "c.ign", minimal(passwd={"users": [USER]}, storage={"files": files}))
    res = provision(root, conf, tmp_path / "r")
    assert res.returncode == 2, res.stdout + res.stderr  # applied what it could, reported the rest
    assert res.stdout.count("FAILED") == 3 and "absolute" in res.stdout
    assert list(outside.iterdir()) == []
    assert not Path("/containers.conf").exists() and not Path("/podman-machine").exists()
    assert (root / "etc/ok").read_bytes() == b"ok"
    assert (root / "usr/home/core/.ssh/authorized_keys").exists()
    report = json.loads((root / "var/db/fpvm/last-boot.json").read_text())
    assert any("error" in a and "absolute" in a["error"] for a in report["actions"])


def test_links_planted_in_the_root_are_not_followed_by_writes(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = make_root(tmp_path)
    (root / "etc/evil").symlink_to(str(outside))  # absolute: would be followed on the host
    (root / "etc/up").symlink_to("../../../..")  # relative, climbing above the root
    cfg = minimal(
        storage={
            "files": [_file("/etc/evil/payload", b"x"), _file("/etc/up/escape", b"x")],
            "directories": [{"path": "/etc/evil/dir"}],
            "links": [{"path": "/etc/up/l", "target": "/x"}],
        }
    )
    conf = write_config(tmp_path / "c.ign", cfg)
    res = provision(root, conf, tmp_path / "r")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stdout.count("FAILED") == 4
    assert list(outside.iterdir()) == []
    assert not (tmp_path.parent / "escape").exists() and not (tmp_path.parent / "l").exists()


def test_paths_through_the_configs_own_links_are_invalid(tmp_path: Path) -> None:
    """Upstream rejects a config whose files go through one of its own links: nothing is applied."""
    cfg = minimal(
        storage={
            "links": [{"path": "/etc/evil", "target": "/tmp"}],
            "files": [_file("/etc/evil/payload", b"x")],
        }
    )
    root, res, before, _ = _provision(tmp_path, cfg)
    assert res.returncode == 1
    assert snapshot(root, exclude=()) == before


def test_overwrite_false_keeps_a_different_existing_file(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "etc/motd").write_bytes(b"admin's\n")
    conf = write_config(tmp_path / "c.ign", minimal(storage={"files": [_file("/etc/motd", b"config's\n")]}))
    res = provision(root, conf, tmp_path / "r")
    assert res.returncode == 0
    assert (root / "etc/motd").read_bytes() == b"admin's\n"
    assert "overwrite is false" in (root / "var/log/fpvm.log").read_text()
    assert "warning: /etc/motd: exists with other contents and overwrite is false" in res.stdout


def test_planted_links_at_the_agents_own_files(tmp_path: Path) -> None:
    """The log, state and report paths are the agent's: links planted there are not followed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_bytes(b"keep")
    root = make_root(tmp_path)
    (root / "var/log/fpvm.log").symlink_to(str(victim))
    (root / "var/db/fpvm").mkdir()
    (root / "var/db/fpvm/state.json").symlink_to(str(victim))
    conf = write_config(tmp_path / "c.ign", minimal(passwd={"users": [USER]}))
    res = provision(root, conf, tmp_path / "r")
    assert "Traceback" not in res.stderr
    assert victim.read_bytes() == b"keep"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert "cannot write the log" in res.stderr


def test_planted_link_over_the_agents_directories(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = make_root(tmp_path)
    (root / "var/log").rmdir()
    (root / "var/log").symlink_to(str(outside))
    (root / "var/db").rmdir()
    (root / "var/db").symlink_to(str(outside))
    conf = write_config(tmp_path / "c.ign", minimal(passwd={"users": [USER]}))
    res = provision(root, conf, tmp_path / "r")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "cannot write the log" in res.stderr
    assert list(outside.iterdir()) == []
