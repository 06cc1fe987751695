"""The command runner: real subprocesses, or JSON lines recorded for tests and staging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fpvm.guest.runner import CommandError, RecordingRunner, SubprocessRunner, read_record


def test_recording_runner_appends_json_lines(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    r = RecordingRunner(rec)
    assert r.recording
    assert r.run(["pw", "-R", "/x", "useradd", "-n", "core"]).ok
    r.run(["pw", "usermod", "-n", "core", "-H", "0"], input=b"$6$hash")
    lines = rec.read_text().splitlines()
    assert json.loads(lines[0]) == {"argv": ["pw", "-R", "/x", "useradd", "-n", "core"]}
    assert json.loads(lines[1])["input"] == "$6$hash"
    assert read_record(rec)[1] == ["pw", "usermod", "-n", "core", "-H", "0"]


def test_subprocess_runner_runs_and_checks() -> None:
    r = SubprocessRunner()
    assert not r.recording
    assert r.run(["sh", "-c", "cat"], input=b"abc").stdout == b"abc"
    assert r.run(["sh", "-c", "exit 3"], check=False).returncode == 3
    with pytest.raises(CommandError, match="boom"):
        r.run(["sh", "-c", "echo boom >&2; exit 1"])
    assert r.run(["/nonexistent/cmd"], check=False).returncode == 127
