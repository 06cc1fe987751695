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
import threading
from typing import Any

MAX_DEPTH = 10000


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


def _loads(text: str) -> Any:
    return json.loads(text, object_pairs_hook=Obj, parse_float=Num, parse_constant=_reject_constant)


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

    old_size = threading.stack_size()
    threading.stack_size(512 * 1024 * 1024)
    try:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
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
    except json.JSONDecodeError as exc:
        raise JSONSyntaxError(f"invalid JSON: {exc.msg}", exc.lineno, exc.colno) from None
    except ValueError as exc:
        raise JSONSyntaxError(str(exc)) from None
