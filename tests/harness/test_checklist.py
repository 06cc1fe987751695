"""docs/freebsd-checklist.md names, for every item, the check that answers it, and those checks exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECKLIST = REPO / "docs" / "freebsd-checklist.md"


def _items() -> list[str]:
    items: list[str] = []
    for line in CHECKLIST.read_text().split("\n"):
        if line.startswith("- ["):
            items.append(line)
        elif line.startswith("      ") and items:
            items[-1] += " " + line.strip()
    return items


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_item_names_its_check() -> None:
    items = _items()
    assert len(items) > 70
    for item in items:
        assert " → " in item, f"no check named for: {item[:100]}"
        ref = item.split(" → ", 1)[1]
        assert ref.startswith(("`tests/freebsd/", "tests/e2e/run", "person", "`tests/e2e")), ref


def test_every_named_check_exists() -> None:
    named = 0
    for item in _items():
        ref = item.split(" → ", 1)[1]
        current: Path | None = None
        for token in re.findall(r"(tests/freebsd/\w+\.py)?::(\w+)", ref):
            file, name = token
            if file:
                current = REPO / file
            assert current is not None and current.exists(), ref
            assert name in _tests_in(current), f"{current.name} has no {name}"
            named += 1
    assert named >= 50
