"""One escaping function for every line the agent prints or logs. Standard library only.

A ground-floor module beside fsutil: escaping untrusted text for a terminal or a log is nothing
guest-specific, and any area that prints what a config or a guest wrote should use this one function.

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


__all__ = ["MAX_SHOWN", "printable"]
