"""Small re-implementations of the Go library behaviour that upstream Ignition's validation relies on.

URL parsing (``net/url``, data URLs) lives in ``gourl`` and is re-exported here.

Whether a config is valid upstream depends on details of Go's ``path``, ``net/url``, ``strconv``,
coreos/go-semver, vincent-petithory/dataurl and aws-sdk-go's ``arn`` packages (e.g. ``//a`` is not a
clean path, ``http:foo`` parses as a URL, ``DATA:,x`` has scheme ``data`` but is not a data URL).
To give the same verdict we follow those rules here, written from their documented behaviour.
Each function returns an error message (``str``) or ``None`` rather than raising, because
validation collects every finding.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# --- path ------------------------------------------------------------------------------------------


def clean(p: str) -> str:
    """Go's ``path.Clean``: lexical simplification, one leading slash kept."""
    if p == "":
        return "."
    rooted = p.startswith("/")
    parts: list[str] = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(seg)
    out = ("/" if rooted else "") + "/".join(parts)
    return out or "."


def join(*elems: str) -> str:
    """Go's ``path.Join``: empty elements are ignored, the result is cleaned."""
    kept = [e for e in elems if e != ""]
    return clean("/".join(kept)) if kept else ""


def ext(p: str) -> str:
    """Go's ``path.Ext``: the suffix from the last dot of the last element."""
    for i in range(len(p) - 1, -1, -1):
        if p[i] == "/":
            break
        if p[i] == ".":
            return p[i:]
    return ""


def blen(s: str) -> int:
    """Length in bytes, as Go's ``len`` on a string."""
    return len(s.encode("utf-8", "surrogatepass"))


# --- strconv ---------------------------------------------------------------------------------------

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def parse_int(s: str) -> int | None:
    """Go's ``strconv.ParseInt(s, 10, 64)``: optional sign, ASCII digits, int64 range."""
    body = s[1:] if s[:1] in ("+", "-") else s
    if not body or not all("0" <= c <= "9" for c in body):
        return None
    value = int(s)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


# --- semver (coreos/go-semver) ---------------------------------------------------------------------

_IDENT = re.compile(r"[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*")


class SemVer(NamedTuple):
    """A parsed version (immutable, usable as a key; a NamedTuple: cheaper to declare than a dataclass)."""

    major: int
    minor: int
    patch: int
    pre_release: str = ""
    metadata: str = ""


def parse_semver(version: str) -> SemVer | None:
    """coreos/go-semver ``NewVersion``: metadata after ``+``, pre-release after ``-``, dotted triple."""
    metadata = ""
    if "+" in version:
        version, metadata = version.split("+", 1)
    pre = ""
    if "-" in version:
        version, pre = version.split("-", 1)
    dots = version.split(".", 2)
    if len(dots) != 3:
        return None
    for ident in (pre, metadata):
        if ident and not _IDENT.fullmatch(ident):
            return None
    nums = [parse_int(d) for d in dots]
    if any(n is None for n in nums):
        return None
    major, minor, patch = (int(n) for n in nums if n is not None)
    return SemVer(major, minor, patch, pre, metadata)


# --- quoting ---------------------------------------------------------------------------------------


def go_quote(s: str) -> str:
    """Go's ``%q`` for text: double quotes, Go escapes for specials and non-printables."""
    out = []
    for ch in s:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif ch == "\ufffd" or not ch.isprintable():
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


# --- aws arn ---------------------------------------------------------------------------------------


def arn_parts(s: str) -> list[str] | None:
    """aws-sdk-go ``arn.Parse`` sections, or ``None`` when it is not an ARN."""
    if not s.startswith("arn:") or s.count(":") < 5:
        return None
    return s.split(":", 5)


# Re-exported so callers need one module for "what Go would say".
from fpvm.ignition.gourl import (  # noqa: E402
    GoURL,
    URLError,
    data_url_error,
    go_base64_error,
    parse_url,
    query_values,
)

__all__ = [
    "GoURL",
    "SemVer",
    "URLError",
    "arn_parts",
    "blen",
    "clean",
    "data_url_error",
    "ext",
    "go_base64_error",
    "go_quote",
    "join",
    "parse_int",
    "parse_semver",
    "parse_url",
    "query_values",
]
