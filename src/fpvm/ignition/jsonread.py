"""Reading JSON text into plain values, keeping what Go's decoder would see.

Upstream decodes with Go's ``encoding/json``, which keeps duplicate keys (the decoder applies them
in order), distinguishes integer literals from others (``1.0`` is not an int), replaces invalid
UTF-8 and lone surrogates with U+FFFD, and refuses nesting deeper than 10000. Python's ``json``
is used for speed, with hooks that keep those distinctions: objects stay as ordered key/value
pairs (``Obj``) and non-integer numbers as their literal (``Num``).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

MAX_DEPTH = 10000
# Stack for parsing documents nested beyond Python's recursion limit (10000 levels need ~20 MiB).
DEEP_STACK = 128 * 1024 * 1024


class Obj(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs in document order, duplicates kept."""


class Num(str):
    """A JSON number that is not an integer literal (``1.5``, ``1e3``), kept as written."""


class JSONSyntaxError(Exception):
    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        self.message, self.line, self.column = message, line, column
        where = f" (line {line} col {column})" if line else ""
        super().__init__(f"{message}{where}")


_SURROGATE = re.compile("[\ud800-\udfff]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def clean_str(s: str) -> str:
    """Lone surrogates (from ``\\ud800`` escapes) become U+FFFD, as in Go."""
    return _SURROGATE.sub("\ufffd", s) if _SURROGATE.search(s) else s


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")


def _max_depth(text: str) -> int:
    depth = best = 0
    for ch in _STRING.sub("", text):
        if ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def _parse_int(literal: str) -> int | Num:
    # Python refuses to convert integers of more than 4300 digits; none fits Go's int64 anyway.
    return int(literal) if len(literal) < 30 else Num(literal)


def _loads(text: str) -> Any:
    return json.loads(
        text, object_pairs_hook=Obj, parse_float=Num, parse_int=_parse_int, parse_constant=_reject_constant
    )


def _loads_deep(text: str) -> Any:
    """Parse nesting beyond Python's default recursion limit on a thread with a large stack."""
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old, MAX_DEPTH * 3 + 1000))
        try:
            result.append(_loads(text))
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)
        finally:
            sys.setrecursionlimit(old)

    import threading  # only for documents nested deeper than the default stack allows

    old_size = threading.stack_size()
    try:
        threading.stack_size(DEEP_STACK)
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    except (RuntimeError, ValueError) as exc:  # the system refused the thread or its stack
        raise JSONSyntaxError(f"document nested too deeply to read here ({exc})") from None
    finally:
        threading.stack_size(old_size)
    if error:
        raise error[0]
    return result[0]


def loads(data: bytes) -> Any:
    """Parse ``data``; raises ``JSONSyntaxError`` where Go's decoder reports a syntax error."""
    text = data.decode("utf-8", "replace")
    try:
        try:
            return _loads(text)
        except RecursionError:
            if _max_depth(text) > MAX_DEPTH:
                raise JSONSyntaxError("exceeded max depth") from None
            return _loads_deep(text)
    except ValueError as exc:  # JSONDecodeError included; say it as Go would where we can
        go = go_syntax_error(data)
        if go is not None:
            raise JSONSyntaxError(go) from None
        if isinstance(exc, json.JSONDecodeError):
            raise JSONSyntaxError(f"invalid JSON: {exc.msg}", exc.lineno, exc.colno) from None
        raise JSONSyntaxError(str(exc)) from None


# --- Go's wording for syntax errors ----------------------------------------------------------------

_WS = b" \t\r\n"


def _quote_char(data: bytes, i: int) -> str:
    """The character at ``data[i]`` as Go quotes it in syntax errors ('x', '\\x01', '\\ufeff')."""
    for width in (1, 2, 3, 4):
        try:
            ch = data[i : i + width].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return f"'\\x{data[i]:02x}'"
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    code = ord(ch)
    if ch == "\\":
        return "'\\\\'"
    if code < 0x20 or code == 0x7F:
        named = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v"}
        escaped = named.get(ch) or "\\x" + format(code, "02x")
        return f"'{escaped}'"
    if not ch.isprintable() or ch == "\ufeff":
        return f"'\\u{code:04x}'" if code < 0x10000 else f"'\\U{code:08x}'"
    return f"'{ch}'"


def _quote_text(text: str) -> str:
    """Go's jsonwire quoting of invalid text: backquoted unless it holds spaces or unprintables."""
    if any(c == "`" or c == "\ufffd" or c.isspace() or not c.isprintable() for c in text):
        # Undecodable bytes arrive as surrogate escapes; Go prints them as \xNN.
        from fpvm.ignition.gocompat import go_quote

        return go_quote(text)
    return f"`{text}`"


class _GoSyntax(Exception):
    pass


def go_syntax_error(data: bytes) -> str | None:
    """Go's message for the first syntax error in ``data`` (``None`` if Go would accept the syntax)."""
    n = len(data)
    i = 0
    stack: list[str] = []

    def bad(where: str) -> _GoSyntax:
        if i >= n:
            return _GoSyntax("unexpected end of JSON input")
        return _GoSyntax(f"invalid character {_quote_char(data, i)} {where}")

    def skip_ws() -> None:
        nonlocal i
        while i < n and data[i] in _WS:
            i += 1

    def string() -> None:
        nonlocal i
        i += 1  # opening quote
        while True:
            if i >= n:
                raise _GoSyntax("unexpected end of JSON input")
            c = data[i]
            if c == 0x22:
                i += 1
                return
            if c == 0x5C:
                if i + 1 >= n:
                    raise _GoSyntax("unexpected end of JSON input")
                e = data[i + 1]
                if e in b'"\\/bfnrt':
                    i += 2
                    continue
                if e == 0x75:
                    digits = data[i + 2 : i + 6]
                    if len(digits) == 4 and all(d in b"0123456789abcdefABCDEF" for d in digits):
                        i += 6
                        continue
                    if len(digits) < 4 and all(d in b"0123456789abcdefABCDEF" for d in digits):
                        raise _GoSyntax("unexpected end of JSON input")
                    seq = data[i : i + 6].decode("utf-8", "surrogateescape")
                else:
                    seq = data[i : i + 2].decode("utf-8", "surrogateescape")
                raise _GoSyntax(f"invalid escape sequence {_quote_text(seq)} in string")
            if c < 0x20:
                raise bad("in string")
            i += 1

    def number() -> None:
        nonlocal i
        if data[i] == 0x2D:
            i += 1
            if i >= n or not 0x30 <= data[i] <= 0x39:
                raise bad("in numeric literal")
        if data[i] == 0x30:
            i += 1
        else:
            while i < n and 0x30 <= data[i] <= 0x39:
                i += 1
        if i < n and data[i] == 0x2E:
            i += 1
            if i >= n or not 0x30 <= data[i] <= 0x39:
                raise bad("in numeric literal")
            while i < n and 0x30 <= data[i] <= 0x39:
                i += 1
        if i < n and data[i] in b"eE":
            i += 1
            if i < n and data[i] in b"+-":
                i += 1
            if i >= n or not 0x30 <= data[i] <= 0x39:
                raise bad("in numeric literal")
            while i < n and 0x30 <= data[i] <= 0x39:
                i += 1

    def literal(word: bytes) -> None:
        nonlocal i
        for k, expected in enumerate(word):
            if i >= n:
                raise _GoSyntax("unexpected end of JSON input")
            if data[i] != expected:
                if k == 0:
                    raise bad("looking for beginning of value")
                raise bad(f"in literal {word.decode()} (expecting {chr(expected)!r})")
            i += 1

    def push(kind: str) -> None:
        nonlocal i
        if len(stack) >= MAX_DEPTH:
            raise _GoSyntax("exceeded max depth")
        stack.append(kind)
        i += 1

    try:
        state = "value"
        while True:
            skip_ws()
            if state == "value":
                if i >= n:
                    raise _GoSyntax("unexpected end of JSON input")
                c = data[i]
                if c == 0x7B:
                    push("obj")
                    state = "key_or_end"
                    continue
                if c == 0x5B:
                    push("arr")
                    state = "value_or_end"
                    continue
                if c == 0x22:
                    string()
                elif c == 0x2D or 0x30 <= c <= 0x39:
                    number()
                elif c in b"tfn":
                    literal({0x74: b"true", 0x66: b"false", 0x6E: b"null"}[c])
                else:
                    raise bad("looking for beginning of value")
                state = "after"
            elif state in ("key_or_end", "key"):
                if state == "key_or_end" and i < n and data[i] == 0x7D:
                    stack.pop()
                    i += 1
                    state = "after"
                    continue
                if i >= n or data[i] != 0x22:
                    raise bad("looking for beginning of object key string")
                string()
                skip_ws()
                if i >= n or data[i] != 0x3A:
                    raise bad("after object key")
                i += 1
                state = "value"
            elif state == "value_or_end":
                if i < n and data[i] == 0x5D:
                    stack.pop()
                    i += 1
                    state = "after"
                else:
                    state = "value"
            else:  # after a value
                if not stack:
                    if i >= n:
                        return None
                    raise bad("after top-level value")
                if i >= n:
                    raise _GoSyntax("unexpected end of JSON input")
                c = data[i]
                in_object = stack[-1] == "obj"
                if c == 0x2C:  # ','
                    i += 1
                    state = "key" if in_object else "value"
                elif c == (0x7D if in_object else 0x5D):  # the matching '}' or ']'
                    stack.pop()
                    i += 1
                else:
                    raise bad("after object key:value pair" if in_object else "after array element")
    except _GoSyntax as exc:
        return str(exc)
