"""The error raised when a resource cannot be fetched, decoded or verified.

It is an ``IgnitionError`` so that callers (and the property test) only ever see the engine's own
error type; the report holds one entry whose path names the config field the resource came from
(``$`` when the caller did not say).
"""

from __future__ import annotations

from fpvm.ignition.errors import IgnitionError, Report


class SourceError(IgnitionError):
    """A resource could not be fetched, decompressed or verified."""

    def __init__(self, message: str, path: str = "$") -> None:
        report = Report()
        report.error(path, message)
        super().__init__(report)
        self.message = message
        self.path = path

    def at(self, path: str) -> SourceError:
        """The same error, attributed to the config field ``path`` (for messages naming the JSON path)."""
        return SourceError(self.message, path)
