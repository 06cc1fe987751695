"""rc configuration, kept only in ``/etc/rc.conf.d/<service>`` files.

Why per-service files: ``load_rc_config NAME`` (rc.subr) sources ``/etc/rc.conf.d/NAME`` after
``/etc/rc.conf``, so the agent never has to edit the administrator's ``/etc/rc.conf``, and a file
belongs to one service. ``/etc/rc.conf.d/NAME`` may also be a directory whose files are all sourced;
then the agent writes ``/etc/rc.conf.d/NAME/fpvm``.

The files are plain ``name="value"`` lines. Like cloud-init's FreeBSD helpers (and ``sysrc``), a
value is only written when it differs from what the file already says, lines the agent does not
manage (comments, other variables, blank lines) are kept byte for byte, and an unchanged file is not
rewritten at all (same inode, same mtime), so a second boot changes nothing.

Quoting: every value the agent writes into a file that sh sources (these files, rc.subr's
``${name}_env``, the proxy profile script) goes through one function, ``sh_quote``. It refuses
values holding control characters (C0, DEL, C1, U+2028, U+2029) instead of trying to quote them:
no proxy URL, path or flag needs one, and each of them is a line break for some reader (Python's
``splitlines``, editors, ``sysrc``). What is left is quoted so that sh reads back exactly the value
and expands nothing. Files are split at ``\n`` only, as sh does.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fpvm.guest.actions import Action
from fpvm.safetext import bad_char
from fpvm.safetext import lines as split_lines

if TYPE_CHECKING:
    from fpvm.guest.context import ApplyContext
    from fpvm.guest.rootfs import RootFS

RC_CONF_D = "/etc/rc.conf.d"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SERVICE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_ASSIGN = re.compile(r"^[ \t]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


class RcConfError(ValueError):
    """A service or variable name, or a value, that cannot be written as an rc.conf line."""


def sh_quote(value: str, *, single: bool = False) -> str:
    """``value`` as one sh word that sh reads back as exactly ``value``, expanding nothing.

    Double quotes (rc.conf style) escape ``\\ " $ ` ``; ``single=True`` gives ``'...'`` with each
    ``'`` written as ``'\\''``. Values with control characters raise RcConfError (see the module doc).
    """
    ch = bad_char(value)
    if ch is not None:
        raise RcConfError(f"values sourced by sh cannot contain control characters ({ch!r}): {value!r}")
    if single:
        return "'" + value.replace("'", "'\\''") + "'"
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
    return f'"{out}"'


def unquote(text: str) -> str | None:
    """The value of the right-hand side of an ``name=...`` line, or None when it is not a plain word.

    Handles what rc.conf files contain in practice: ``"..."`` (with ``\\`` escapes), ``'...'``, bare
    words, concatenations of those, and a trailing ``# comment``. Anything needing expansion
    (``$var``, backquotes) returns None: the agent then treats the value as different and rewrites it.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            rest = text[i:].strip()
            return "".join(out) if rest == "" or rest.startswith("#") else None
        if c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                return None
            out.append(text[i + 1 : end])
            i = end + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    return None
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c in "$`":
                    return None
                if c == "\\" and i + 1 < n and text[i + 1] in '\\"$`\n':
                    out.append(text[i + 1])
                    i += 2
                    continue
                out.append(c)
                i += 1
        elif c == "\\":
            if i + 1 >= n:
                return None
            out.append(text[i + 1])
            i += 2
        elif c in "$`;&|<>()":
            return None
        elif c == "#" and not out:
            return ""
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse(text: str) -> dict[str, str | None]:
    """Variables assigned in an rc.conf-style text (the last assignment wins, as in sh)."""
    values: dict[str, str | None] = {}
    for line in split_lines(text):
        m = _ASSIGN.match(line)
        if m:
            values[m.group(1)] = unquote(m.group(2))
    return values


def update_text(text: str, values: dict[str, str | None]) -> str:
    """``text`` with each variable set to its value (None removes it); other lines kept as they are.

    A variable already assigned keeps its place (its last assignment is rewritten, earlier ones are
    left: they are overridden anyway); a new one is appended.
    """
    lines = split_lines(text, keepends=True)
    for name, value in values.items():
        _check_name(name)
        found = [(i, m) for i, line in enumerate(lines) if (m := _ASSIGN.match(line)) and m.group(1) == name]
        if value is None:
            for i, _ in reversed(found):
                del lines[i]
            continue
        if found and unquote(found[-1][1].group(2)) == value:
            continue
        new = f"{name}={sh_quote(value)}\n"
        if found:
            lines[found[-1][0]] = new
        else:
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines.append(new)
    return "".join(lines)


def conf_path(root: RootFS, service: str, directory: str = RC_CONF_D) -> str:
    """The guest path the agent writes for ``service`` (a file, or ``fpvm`` inside a directory)."""
    if not _SERVICE.match(service):
        raise RcConfError(f"invalid rc service name {service!r}")
    path = f"{directory}/{service}"
    return f"{path}/fpvm" if root.is_dir(path) else path


def read_values(root: RootFS, service: str, directory: str = RC_CONF_D) -> dict[str, str | None]:
    """What the agent's rc.conf.d file for ``service`` currently assigns."""
    text = root.read_text(conf_path(root, service, directory))
    return parse(text) if text is not None else {}


def set_values(root: RootFS, service: str, values: dict[str, str | None], directory: str = RC_CONF_D) -> bool:
    """Make ``/etc/rc.conf.d/<service>`` assign ``values``; True when the file changed.

    The file is written (atomically, 0644 root:wheel) only when its text changes; a file that would
    become empty is removed rather than left behind.
    """
    path = conf_path(root, service, directory)
    old = root.read_text(path)
    new = update_text(old or "", values)
    if new == (old or ""):
        return False
    if new.strip() == "" and old is not None:
        return root.remove(path)
    return root.write(path, new.encode("utf-8"), 0o644, 0, 0)


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise RcConfError(f"invalid rc.conf variable name {name!r}")


class RcConfSet(Action):
    """Set (or remove, with None) variables in ``/etc/rc.conf.d/<service>``."""

    kind = "rcconf"

    def __init__(self, service: str, values: dict[str, str | None], source: str = "", note: str = "") -> None:
        super().__init__(source, "translate", note)
        if not _SERVICE.match(service):
            raise RcConfError(f"invalid rc service name {service!r}")
        for name, value in values.items():
            _check_name(name)
            if value is not None:
                sh_quote(value)
        self.service = service
        self.values = dict(values)

    def describe(self) -> str:
        parts = [f"{k}={sh_quote(v)}" if v is not None else f"-{k}" for k, v in self.values.items()]
        text = f"rc.conf.d/{self.service}: {' '.join(parts)}"
        return text + (f"  ({self.note})" if self.note else "")

    def fields(self) -> dict[str, Any]:
        return {"service": self.service, "values": self.values}

    def apply(self, ctx: ApplyContext) -> bool:
        changed = set_values(ctx.root, self.service, self.values)
        if changed:
            ctx.log.info(f"rc.conf.d/{self.service} updated")
        return changed

