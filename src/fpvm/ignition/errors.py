"""Findings about a config (errors and warnings) and the one exception the engine raises.

Upstream Ignition collects every finding in a report instead of stopping at the first, so a user
sees all problems of a config at once; the same shape is kept here. Paths are JSONPath-like
(``$.storage.files[3].path``) because that is what a user can find in the document.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from fpvm.ignition.records import dataclass, field

Kind = Literal["error", "warning"]


class Entry(NamedTuple):
    kind: Kind
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"


@dataclass
class Report:
    """Everything found while reading one config; ``version`` is the spec version it declared."""

    entries: list[Entry] = field(default_factory=list)
    version: str | None = None

    def error(self, path: str, message: str) -> None:
        self.entries.append(Entry("error", path, message))

    def warning(self, path: str, message: str) -> None:
        self.entries.append(Entry("warning", path, message))

    def extend(self, other: Report) -> None:
        self.entries.extend(other.entries)

    @property
    def errors(self) -> list[Entry]:
        return [e for e in self.entries if e.kind == "error"]

    @property
    def warnings(self) -> list[Entry]:
        return [e for e in self.entries if e.kind == "warning"]

    @property
    def valid(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.entries)


class IgnitionError(Exception):
    """The config cannot be used; ``report`` holds every finding (at least one error)."""

    def __init__(self, report: Report) -> None:
        self.report = report
        first = report.errors[0] if report.errors else Entry("error", "$", "config is not valid")
        more = len(report.errors) - 1
        suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more > 0 else ""
        super().__init__(f"{first.path}: {first.message}{suffix}")
