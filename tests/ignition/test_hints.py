"""Plain hints next to upstream's Go-flavoured messages; the messages themselves stay upstream's."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from fpvm.ignition import check
from fpvm.ignition.hints import hint

CASES = Path(__file__).resolve().parent / "cases"
GO_WORDS = ("Go ", "types.", "util.", "struct {", "[]", "unmarshal")


def _config(**sections: object) -> bytes:
    return json.dumps({"ignition": {"version": "3.4.0"}, **sections}).encode()


@pytest.mark.parametrize(
    ("data", "path", "plain"),
    [
        (b"[]", "$", "the config must be a JSON object, not an array"),
        (b'"x"', "$", "the config must be a JSON object, not a string"),
        (b"3", "$", "the config must be a JSON object, not a number"),
        (b'{"ignition": 3}', "$.ignition", "$.ignition must be a JSON object, not a number"),
        (
            b'{"ignition": {"version": 3}}',
            "$.ignition.version",
            "$.ignition.version must be a string, not a number",
        ),
        (_config(storage=[]), "$.storage", "$.storage must be a JSON object, not an array"),
        (
            _config(storage={"files": {}}),
            "$.storage.files",
            "$.storage.files must be a list (JSON array), not an object",
        ),
        (
            _config(storage={"files": [2]}),
            "$.storage.files[0]",
            "$.storage.files[0] must be a JSON object, not a number",
        ),
        (
            _config(storage={"files": [{"path": "/a", "mode": "644"}]}),
            "$.storage.files[0].mode",
            "$.storage.files[0].mode must be a whole number, not a string",
        ),
        (
            _config(storage={"files": [{"path": "/a", "mode": 1.5}]}),
            "$.storage.files[0].mode",
            "$.storage.files[0].mode must be a whole number (64-bit), not 1.5",
        ),
        (
            _config(passwd={"users": [{"name": "a", "sshAuthorizedKeys": [1]}]}),
            "$.passwd.users[0].sshAuthorizedKeys[0]",
            "$.passwd.users[0].sshAuthorizedKeys[0] must be a string, not a number",
        ),
        (
            _config(passwd={"users": [{"name": "a", "noCreateHome": "no"}]}),
            "$.passwd.users[0].noCreateHome",
            "$.passwd.users[0].noCreateHome must be true or false, not a string",
        ),
        (b'{"ignition":', "$", "the config is not valid JSON"),
        (b"\x00\x01garbage", "$", "the config is not valid JSON"),
    ],
)
def test_hint_for_each_go_message(data: bytes, path: str, plain: str) -> None:
    errors = check(data).errors
    assert [e.path for e in errors] == [path]
    assert hint(errors[0].path, errors[0].message) == plain
    assert not any(word in plain for word in GO_WORDS)


def test_every_recorded_go_message_gets_a_plain_hint() -> None:
    """Upstream's messages naming Go types (recorded from ignition-validate) each get a hint."""
    seen = 0
    for case in CASES.glob("*.jsonl.gz"):
        with gzip.open(case, "rt", encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                for path, message in row.get("errors", []) + row.get("warnings", []):
                    if "Go value" in message or "Go struct" in message or " of type " in message:
                        seen += 1
                        plain = hint(path, message)
                        assert plain and not any(word in plain for word in GO_WORDS), message
    assert seen >= 3


def test_plain_messages_get_no_hint() -> None:
    assert hint("$.storage.files[0].path", "path not absolute") is None
    assert hint("$.storage.files[0].contents.source", "invalid character for media type") is None
