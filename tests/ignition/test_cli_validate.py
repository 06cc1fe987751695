"""`fpvm ignition validate` through the real command line: exit codes, verdicts, hints, --json records."""

from __future__ import annotations

import json
from pathlib import Path

from fpvm_runner import run_fpvm
from fpvm_support import PODMAN_CAPTURE, podman_ignition_configs

GOOD = b'{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"/a","mode":2541}]},"extra":1}'
BAD = b'{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"a"}],"links":[{"path":"/l"}]}}'


def test_valid_files_exit_0_with_a_verdict_each(tmp_path: Path) -> None:
    good = tmp_path / "good.ign"
    good.write_bytes(GOOD)
    configs = [str(p) for p in podman_ignition_configs()]
    res = run_fpvm("ignition", "validate", str(good), *configs)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    lines = res.stdout.splitlines()
    assert lines[0] == f"{good}: valid (2 warnings)"
    assert "  warning: $.extra: unused key extra" in lines[1:3]
    assert any("setuid/setgid/sticky" in line for line in lines[1:3])
    assert lines[3:] == [f"{name}: valid" for name in configs]


def test_invalid_file_exits_1_with_one_line_per_error(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.ign", tmp_path / "bad.ign"
    good.write_bytes(GOOD)
    bad.write_bytes(BAD)
    res = run_fpvm("ignition", "validate", str(good), str(bad))
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    at = lines.index(f"{bad}: invalid (2 errors)")
    assert lines[at + 1 :] == [
        "  error: $.storage.files[0].path: path not absolute",
        "  error: $.storage.links[0].target: link target is required",
    ]


def test_quiet_prints_nothing(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.ign", tmp_path / "bad.ign"
    good.write_bytes(GOOD)
    bad.write_bytes(BAD)
    assert (
        run_fpvm("ignition", "validate", "-q", str(good)).returncode,
        run_fpvm("ignition", "validate", "-q", str(good)).stdout,
    ) == (0, "")
    res = run_fpvm("ignition", "validate", "--quiet", str(good), str(bad))
    assert (res.returncode, res.stdout, res.stderr) == (1, "", "")
    res = run_fpvm("ignition", "validate", "-q", str(tmp_path / "missing.ign"))
    assert (res.returncode, res.stdout, res.stderr) == (2, "", "")
    assert run_fpvm("ignition", "validate", "-q", "--json", str(good)).returncode == 2  # one or the other


def test_go_wording_comes_with_a_plain_hint(tmp_path: Path) -> None:
    """Upstream's message stays word for word (parity); the hint says it without Go types."""
    arr = tmp_path / "arr.ign"
    arr.write_bytes(b"[]")
    res = run_fpvm("ignition", "validate", str(arr))
    assert res.returncode == 1
    assert res.stdout.splitlines() == [
        f"{arr}: invalid (1 error)",
        "  error: $: json: cannot unmarshal array into Go value of type util.versionStub",
        "    hint: the config must be a JSON object, not an array",
    ]
    field = b'{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":1,"overwrite":"yes"}]}}'
    res = run_fpvm("ignition", "validate", "--json", "-", input=field)
    errors = json.loads(res.stdout)["errors"]
    assert errors == [
        {
            "path": "$.storage.files[0].path",
            "message": "json: cannot unmarshal number into Go struct field Config.storage.files.0.path "
            "of type string",
            "hint": "$.storage.files[0].path must be a string, not a number",
        },
        {
            "path": "$.storage.files[0].overwrite",
            "message": "json: cannot unmarshal string into Go struct field Config.storage.files.0.overwrite "
            "of type bool",
            "hint": "$.storage.files[0].overwrite must be true or false, not a string",
        },
    ]


def test_unreadable_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ign"
    bad.write_bytes(BAD)
    res = run_fpvm("ignition", "validate", str(bad), str(tmp_path / "missing.ign"))
    assert res.returncode == 2
    assert f"{tmp_path / 'missing.ign'}: cannot read: No such file or directory" in res.stderr


def test_usage_error_exits_2() -> None:
    res = run_fpvm("ignition", "validate")
    assert res.returncode == 2
    assert "usage:" in res.stderr


def test_json_records_one_line_per_file(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.ign", tmp_path / "bad.ign"
    good.write_bytes(GOOD)
    bad.write_bytes(BAD)
    res = run_fpvm("ignition", "validate", "--json", str(good), str(bad))
    assert res.returncode == 1
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["file"] for r in records] == [str(good), str(bad)]
    assert set(records[0]) == {"file", "valid", "errors", "warnings"}
    assert records[0]["valid"] is True and records[0]["errors"] == []
    assert {"path": "$.extra", "message": "unused key extra"} in records[0]["warnings"]
    assert records[1]["valid"] is False
    assert records[1]["errors"][0] == {"path": "$.storage.files[0].path", "message": "path not absolute"}


def test_stdin_and_malformed_json() -> None:
    res = run_fpvm("ignition", "validate", "--json", "-", input=b'{"ignition": {"version": "3.2.0"}')
    assert res.returncode == 1
    record = json.loads(res.stdout)
    assert record["file"] == "-" and record["valid"] is False
    assert record["errors"] == [
        {"path": "$", "message": "unexpected end of JSON input", "hint": "the config is not valid JSON"}
    ]  # Go's wording, and a plain one
    assert "Traceback" not in res.stderr


def test_capture_is_valid_as_json() -> None:
    res = run_fpvm("ignition", "validate", "--json", str(PODMAN_CAPTURE / "machine.ign"))
    assert res.returncode == 0
    assert json.loads(res.stdout) == {
        "file": str(PODMAN_CAPTURE / "machine.ign"),
        "valid": True,
        "errors": [],
        "warnings": [],
    }
