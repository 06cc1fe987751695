"""Verdicts recorded from upstream's ignition-validate (coreos/ignition a5d574a8, built with Go 1.27).

Each file under cases/ holds one JSON object per line: ``config`` (the document), ``valid`` (upstream's
verdict) and, where both engines report the same finding, ``errors``/``warnings`` as ``[path, message]``
pairs (upstream's message text). The configs come from:

- rules: every validation rule, positive and negative, for every accepted spec version;
- podman-mutations: random mutations of the podman fixtures;
- raw-json: the fixtures re-serialised with repeated and re-cased keys, some with damaged syntax;
- urls-and-units: random URLs, data URLs and unit texts;
- storage-combinations, ignition-section: random storage and ignition sections.

Only cases where fpvm and upstream agreed were recorded; the disagreement count at recording time was
zero. The upstream binary is not needed to run these tests.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from fpvm.ignition import check

CASES = Path(__file__).resolve().parent / "cases"


def _load(name: str) -> list[dict[str, Any]]:
    with gzip.open(CASES / name, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.mark.parametrize("name", sorted(p.name for p in CASES.glob("*.jsonl.gz")))
def test_verdicts_and_messages_match_upstream(name: str) -> None:
    rows = _load(name)
    assert len(rows) > 500
    wrong_verdict: list[str] = []
    missing: list[str] = []
    for row in rows:
        report = check(row["config"].encode("utf-8"))
        if report.valid != row["valid"]:
            wrong_verdict.append(f"{row['name']}: upstream says valid={row['valid']}, got {report.entries}")
            continue
        ours = {(e.kind, e.path, e.message) for e in report.entries}
        for kind in ("error", "warning"):
            for path, message in row.get(kind + "s", []):
                if (kind, path, message) not in ours:
                    missing.append(f"{row['name']}: expected {kind} {path}: {message}; got {sorted(ours)}")
    assert not wrong_verdict, "\n".join(wrong_verdict[:20])
    assert not missing, "\n".join(missing[:20])


def test_recorded_cases_cover_both_verdicts_for_every_version() -> None:
    rows = _load("rules.jsonl.gz")
    for version in ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0", "3.7.0-experimental"):
        verdicts = {r["valid"] for r in rows if r["name"].startswith(version + "/")}
        assert verdicts == {True, False}, version


def test_every_upstream_message_was_confirmed_by_upstream() -> None:
    # Each message fpvm can report for a rule appears in an entry both engines reported, so no rule is
    # only checked against our own reading of the upstream code.
    from fpvm.ignition import validate

    confirmed = set()
    for path in CASES.glob("*.jsonl.gz"):
        for row in _load(path.name):
            confirmed.update(message for _, message in row.get("errors", []) + row.get("warnings", []))
    messages = {value for name, value in vars(validate).items() if name.isupper() and isinstance(value, str)}
    messages |= {message for _, message in validate.FS_LABEL_LIMITS.values()}
    assert len(messages) > 70
    assert messages <= confirmed, sorted(messages - confirmed)
