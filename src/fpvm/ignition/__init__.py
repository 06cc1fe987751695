"""Ignition config spec 3.0-3.6: model, parsing, validation, merging and sources. Standard library only.

Public API:

- ``parse(data) -> Config``: read, validate and translate to the newest spec; raises ``IgnitionError``
  (with ``.report``) when the config is not valid.
- ``parse_with_report(data) -> (Config, Report)``: the same, also returning the warnings.
- ``check(data) -> Report``: never raises for bad input; ``report.valid`` tells the verdict.
"""

from __future__ import annotations

from fpvm.ignition.errors import Entry, IgnitionError, Report
from fpvm.ignition.model import Config
from fpvm.ignition.parse import check, parse, parse_with_report

__all__ = ["Config", "Entry", "IgnitionError", "Report", "check", "parse", "parse_with_report"]
