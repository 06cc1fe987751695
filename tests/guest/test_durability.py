"""Provision's durability: files written during a first provisioning are made durable together, and
all of them before the state says "provisioned" (see ``fpvm.guest.provision``)."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest
from guest_support import make_root, minimal

from fpvm.guest.provision import provision

N_FILES = 40


def config(n: int) -> bytes:
    import json

    files = [
        {
            "path": f"/etc/fpvm-test/d{i % 4}/f{i}",
            "contents": {"source": "data:," + urllib.parse.quote(f"{i}\n")},
        }
        for i in range(n)
    ]
    return json.dumps(minimal(storage={"files": files})).encode()


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """fsync(2) (by path), sync(2) and rename(2) calls, in order, from this process."""
    seen: list[tuple[str, str]] = []
    real_fsync, real_sync, real_replace = os.fsync, os.sync, os.replace

    def fsync(fd: int) -> None:
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def sync() -> None:
        seen.append(("sync", ""))
        real_sync()

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str], **kw: object) -> None:
        seen.append(("replace", os.fspath(dst)))
        real_replace(src, dst, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "sync", sync)
    monkeypatch.setattr(os, "replace", replace)
    return seen


def test_first_provision_syncs_once_before_recording_success(tmp_path: Path, events: list) -> None:
    root = make_root(tmp_path)
    out = provision(str(root), config(N_FILES), record=str(tmp_path / "rec"), echo=None, ready=False)
    assert out.status == 0
    state = str(root / "var/db/fpvm/state.json")
    marked = next(i for i, (kind, path) in enumerate(events) if kind == "replace" and path == state)
    before = events[:marked]
    assert [k for k, _ in before].count("sync") == 1
    first_sync = before.index(("sync", ""))
    synced = {p for k, p in before[first_sync:] if k == "fsync"}
    written = {str(root / f"etc/fpvm-test/d{i % 4}/f{i}") for i in range(N_FILES)}
    dirs = {str(root / f"etc/fpvm-test/d{j}") for j in range(4)}
    # Every file and its directory is on disk before "provisioned" is.
    assert written | dirs <= synced
    # ... and no fsync per file while writing: one per file and one per directory, at the end.
    assert not [p for k, p in before[:first_sync] if k == "fsync" and p in written | dirs]
    assert sum(1 for k, p in before if k == "fsync" and p in dirs) == len(dirs)


def test_later_runs_fsync_each_write(tmp_path: Path, events: list) -> None:
    root = make_root(tmp_path)
    assert provision(str(root), config(4), record=str(tmp_path / "rec"), echo=None, ready=False).status == 0
    events.clear()
    assert provision(str(root), config(5), record=str(tmp_path / "rec"), echo=None, ready=False).status == 0
    # Already provisioned: no deferral, the one new file (f4) is fsynced where it is written.
    assert ("sync", "") not in events
    assert any(k == "fsync" and "/d0/.f4." in p and p.endswith(".fpvm-tmp") for k, p in events)
