"""The root itself is never a target (issue 16): no entry replaces, removes, re-owns or writes beside it.

``/`` passes Ignition's validation (it is absolute and clean), so the plan refuses it: the entry is
reported with its JSON path and the rest of the config applies. The low-level helpers refuse it too.
"""

from __future__ import annotations

import json
import os
import stat
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from guest_support import make_root, minimal, provision, write_config

from fpvm.fsutil import atomic_write
from fpvm.guest.plan import PlanOptions, build_plan
from fpvm.guest.rootfs import RootFS, UnsafePathError
from fpvm.guest.storage import RootRefused
from fpvm.ignition import parse


def _file(path: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"path": path, "contents": {"source": "data:," + urllib.parse.quote(data)}, **extra}


OK_FILE = _file("/etc/ok", b"ok\n")
USER = {"name": "core", "uid": 501, "sshAuthorizedKeys": ["ssh-ed25519 AAAA k"]}

CASES = {
    "file-overwrite": (
        {"files": [_file("/", b"payload", overwrite=True, mode=0o644), OK_FILE]}, "files[0].path",
    ),
    "file": ({"files": [_file("/", b"payload"), OK_FILE]}, "files[0].path"),
    "hardlink": (
        {"links": [{"path": "/", "target": "/etc/master.passwd", "hard": True, "overwrite": True}],
         "files": [OK_FILE]},
        "links[0].path",
    ),
    "symlink": (
        {"links": [{"path": "/", "target": "etc", "overwrite": True}], "files": [OK_FILE]}, "links[0].path",
    ),
    "directory": (
        {"directories": [{"path": "/", "mode": 0o777, "overwrite": True, "user": {"id": 501}}],
         "files": [OK_FILE]},
        "directories[0].path",
    ),
    "hardlink-to-root": (
        {"links": [{"path": "/etc/rootlink", "target": "/", "hard": True}], "files": [OK_FILE]},
        "links[0].target",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_root_entries_are_refused_and_the_rest_applies(tmp_path: Path, case: str) -> None:
    storage, field = CASES[case]
    stage = tmp_path / "stage"  # the root's parent holds only the root and a sentinel
    root = make_root(stage)
    sentinel = stage / "sentinel"
    sentinel.write_bytes(b"keep\n")
    inputs = tmp_path / "in"
    inputs.mkdir()
    conf = write_config(inputs / "c.ign", minimal(passwd={"users": [USER]}, storage=storage))
    st = os.lstat(root)

    res = provision(root, conf, inputs / "rec.jsonl")

    assert "Traceback" not in res.stderr
    after = os.lstat(root)
    assert stat.S_ISDIR(after.st_mode)
    assert (after.st_ino, stat.S_IMODE(after.st_mode), after.st_uid) == (
        st.st_ino, stat.S_IMODE(st.st_mode), st.st_uid,
    )  # fmt: skip
    assert sorted(os.listdir(stage)) == ["root", "sentinel"]  # nothing beside the root
    assert sentinel.read_bytes() == b"keep\n"
    assert res.returncode == 2, res.stdout + res.stderr  # the entry failed, the others applied
    assert f"$.storage.{field}" in res.stdout and "the root itself" in res.stdout
    assert (root / "etc/ok").read_bytes() == b"ok\n"
    assert (root / "usr/home/core/.ssh/authorized_keys").exists()
    report = json.loads((root / "var/db/fpvm/last-boot.json").read_text())
    refused = [a for a in report["actions"] if a["kind"] == "refused"]
    assert len(refused) == 1 and f"$.storage.{field}" in refused[0]["error"]


def test_plan_shows_the_refusal_with_its_json_path() -> None:
    cfg = parse(json.dumps(minimal(storage={"files": [_file("/", b"x", overwrite=True), OK_FILE]})).encode())
    actions = build_plan(cfg, PlanOptions(fetch_remote=False), units=False)
    refused = [a for a in actions if isinstance(a, RootRefused)]
    assert [a.source for a in refused] == ["$.storage.files[0].path"]
    assert "root itself" in refused[0].describe()
    assert any(getattr(a, "path", None) == "/etc/ok" for a in actions)


@pytest.mark.parametrize("path", ["/", "//"])
def test_rootfs_refuses_to_change_the_root_itself(tmp_path: Path, path: str) -> None:
    stage = tmp_path / "stage"
    root = make_root(stage)
    fs = RootFS(root)
    st = os.lstat(root)
    calls = [
        lambda: fs.write(path, b"x"),
        lambda: fs.symlink(path, "etc"),
        lambda: fs.hardlink(path, "/etc/master.passwd"),
        lambda: fs.hardlink("/etc/rootlink", path),
        lambda: fs.remove(path),
        lambda: fs.set_attrs(path, 0o777, 501, 501),
    ]
    for call in calls:
        with pytest.raises(UnsafePathError, match="root itself"):
            call()
    after = os.lstat(root)
    assert (after.st_ino, after.st_mode, after.st_uid) == (st.st_ino, st.st_mode, st.st_uid)
    assert sorted(os.listdir(stage)) == ["root"]
    assert not (root / "etc/rootlink").exists()


def test_atomic_write_refuses_nameless_paths_and_paths_outside_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for bad in (f"{root}/..", "/", "//"):
        with pytest.raises(ValueError, match="names no file"):
            atomic_write(bad, b"x")
    with pytest.raises(ValueError, match="not inside the root"):
        atomic_write(tmp_path / "beside", b"x", root=root)
    with pytest.raises(ValueError, match="not inside the root"):
        atomic_write(root / "a/../../beside", b"x", root=root)
    assert sorted(os.listdir(tmp_path)) == ["root"]
    atomic_write(root / "ok", b"x", root=root)
    assert (root / "ok").read_bytes() == b"x"
