"""docs/image.md's option table is the settings table (fpvm.image.recipe.SETTINGS), row for row.

recipe.py promises that the command line and the documentation come from one table; this test keeps
the documentation's half of that promise: every setting has a row, every row is a setting, in the same
order, and a literal default shown in the docs is the setting's default.
"""

from __future__ import annotations

import re
from pathlib import Path

from fpvm.image.recipe import SETTINGS

DOC = Path(__file__).resolve().parents[2] / "docs" / "image.md"


def _rows() -> list[tuple[list[str], str]]:
    """(options, default cell) of each row of the table under '## The recipe'."""
    text = DOC.read_text()
    section = text.split("## The recipe", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.split("\n"):
        if not line.startswith("| `--"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append((re.findall(r"`(--[a-z0-9-]+)`", cells[0]), cells[1]))
    return rows


def test_every_setting_is_documented_once_in_order() -> None:
    documented = [option for options, _ in _rows() for option in options]
    assert documented == [s.option for s in SETTINGS]


def test_documented_literal_defaults_are_the_settings_defaults() -> None:
    by_option = {s.option: s for s in SETTINGS}
    checked = 0
    for options, cell in _rows():
        literals = re.findall(r"`([^`]+)`|^(\d+)", cell)
        values = [a or b for a, b in literals]
        if len(options) != 1 or not values:
            continue
        setting = by_option[options[0]]
        default = setting.default
        if default is None or isinstance(default, bool):
            continue
        shown = setting.parse(values[0]) if setting.parse and not isinstance(default, str) else values[0]
        assert shown == default, f"{options[0]}: docs say {values[0]!r}, the table {default!r}"
        checked += 1
    assert checked >= 5
