"""The plan's unit: a typed action that describes itself and applies itself to a context.

A plan is computed first (from the config and the target root), shown or validated, and only then
applied; so an action holds everything it needs (decoded file contents, resolved paths) and does no
guessing at apply time beyond what only the root can answer (a uid created by an earlier action).

Each action says how it relates to the Ignition config (``disposition``): ``apply`` (done as asked),
``translate`` (done the FreeBSD way: another path, rc.conf.d instead of systemd ...) or ``ignore``
(Linux-only, recorded and skipped). ``fpvm ignition show`` and ``fpvm guest plan`` print these.
"""

from __future__ import annotations

# Not typing.TYPE_CHECKING: every shim imports this module, and typing costs ~5 ms (mypy treats the
# name the same way). At run time Disposition is plain str; mypy checks the Literal.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar, Literal

    from fpvm.guest.context import ApplyContext

    Disposition = Literal["apply", "translate", "ignore"]
else:
    Disposition = str


class Action:
    """Base class. Subclasses set ``kind`` and implement ``describe``, ``fields`` and ``apply``."""

    kind: ClassVar[str] = "action"

    def __init__(self, source: str = "", disposition: Disposition = "apply", note: str = "") -> None:
        self.source = source  # JSON path in the config this action comes from ("" = agent's own)
        self.disposition: Disposition = disposition
        self.note = note  # why it is translated or ignored

    def describe(self) -> str:
        """One human-readable line."""
        return self.kind

    def fields(self) -> dict[str, Any]:
        """The action's own data for ``to_json`` (JSON-serialisable)."""
        return {}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "disposition": self.disposition}
        if self.source:
            out["source"] = self.source
        if self.note:
            out["note"] = self.note
        out.update(self.fields())
        return out

    def apply(self, ctx: ApplyContext) -> bool:
        """Make the root match this action; True when something changed (or a command was run)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class Note(Action):
    """Something in the config that is deliberately not applied (Linux-only) or only reported."""

    kind = "note"

    def __init__(
        self, subject: str, note: str, source: str = "", disposition: Disposition = "ignore"
    ) -> None:
        super().__init__(source, disposition, note)
        self.subject = subject

    def describe(self) -> str:
        if self.disposition == "ignore":
            return f"skip {self.subject}: {self.note}"
        return f"{self.subject}: {self.note}"

    def fields(self) -> dict[str, Any]:
        return {"subject": self.subject}

    def apply(self, ctx: ApplyContext) -> bool:
        ctx.log.info(self.describe())
        return False
