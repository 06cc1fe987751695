"""Untrusted text: one escaping function for every line the agent prints or logs, and the one rule for
what may not appear in a line of a file that others read line by line. Standard library only.

A ground-floor module beside fsutil: none of this is guest-specific, and any area that prints or
writes what a config or a guest wrote should use these functions.

Paths, user names and other strings in a config are the config author's, and the boot step echoes
the agent's lines to the console: a raw ESC[2J clears it, a raw newline forges a second line. Every
such string goes out through ``printable``: printable characters stay as they are, everything else
(C0/C1 controls, DEL, line and paragraph separators, format characters) becomes a visible escape.
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}
MAX_SHOWN = 4096  # characters of one value shown before it is cut (a 100 000-byte path stays one line)


def _escape(ch: str) -> str:
    code = ord(ch)
    named = _NAMED.get(ch)
    if named:
        return named
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, limit: int = 0) -> str:
    """``text`` with every non-printable character escaped (``\\e``, ``\\n``, ``\\x85``, ``\\u2028``);
    with ``limit`` > 0 cut to that many characters (``…`` and the number left out).

    A backslash stays a backslash: the output is for humans (console, log), not for parsing back.
    """
    if limit > 0 and len(text) > limit:
        text = f"{text[:limit]}…({len(text) - limit} more)"
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)



def bad_char(value: str) -> str | None:
    """The first character that may not appear in an account field, key line or sh-sourced value, or None.

    Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: all of them are
    line breaks for some reader (Python's ``splitlines``, sshd, editors) or invisible in a log.
    """
    for ch in value:
        o = ord(ch)
        if o < 0x20 or 0x7F <= o < 0xA0 or ch in "\u2028\u2029":
            return ch
    return None


def lines(text: str, keepends: bool = False) -> list[str]:
    """``text``'s lines, split at ``\\n`` only (a final newline ends the last line).

    Never ``str.splitlines``: it also splits at ``\\v``, ``\\f``, ``\\x1c``-``\\x1e``, ``\\x85``, U+2028
    and U+2029, so a value holding one of those would become two lines when the file is read back.
    """
    parts = text.split("\n")
    last = parts.pop()
    if keepends:
        parts = [p + "\n" for p in parts]
    if last:
        parts.append(last)
    return parts
