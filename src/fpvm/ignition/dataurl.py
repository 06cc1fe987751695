"""``data:`` URLs (RFC 2397) accepted and rejected exactly as upstream Ignition does.

Ignition parses the source with Go's ``net/url`` and hands ``url.String()`` to the
``vincent-petithory/dataurl`` decoder. Both steps shape what is valid, so both are reproduced here:

* ``net/url``: control characters are rejected, the scheme is lower-cased, an empty fragment
  (``data:,x#``) disappears and a non-empty fragment is re-escaped;
* ``dataurl``: a hand-written lexer. The media type must start with text/image/audio/video/
  application/message/multipart (prefix match, case-sensitive) or ``x-``; parameters are tokens with a
  token or quoted-string value; ``;base64`` must be the last parameter and is spelled in lower case;
  plain data may only contain RFC 2396 URL characters (no space, ``#``, ``"``, ``<>{}|\\^[]`` or
  backquote) with valid ``%XX`` escapes; base64 data must be padded standard base64.

Everything else in this module exists to give the same verdict on the same input.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field

from fpvm.ignition.srcerrors import SourceError

_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')
_HEX = frozenset("0123456789abcdefABCDEF")
# Bytes net/url leaves alone in a fragment (shouldEscape(c, encodeFragment) is false).
_FRAGMENT_KEEP = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~$&+,/:;=?@!()*"
)
# Extra bytes validEncoded() accepts in an already-escaped fragment.
_FRAGMENT_VALID = _FRAGMENT_KEEP | frozenset(b"'[]%")


@dataclass
class DataURL:
    """A decoded data URL; ``media_type`` is ``type/subtype`` (default ``text/plain``)."""

    data: bytes
    media_type: str = "text/plain"
    params: dict[str, str] = field(default_factory=lambda: {"charset": "US-ASCII"})
    base64: bool = False


class DataURLError(SourceError):
    """The source is not a data URL upstream Ignition would accept."""


def decode(url: str) -> bytes:
    """The bytes a ``data:`` URL carries; raises ``DataURLError`` when upstream would reject it."""
    return parse(url).data


def parse(url: str) -> DataURL:
    """Parse a ``data:`` URL into its media type, parameters and bytes."""
    return _Lexer(_as_go_url_string(url)).run()


def encode(data: bytes) -> str:
    """A percent-encoded data URL for ``data`` (what podman writes: ``data:,`` + escaped bytes)."""
    keep = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()")
    return "data:," + "".join(chr(b) if b in keep else f"%{b:02X}" for b in data)


def _error(message: str) -> DataURLError:
    return DataURLError(f"invalid data URL: {message}")


# --- net/url round trip ------------------------------------------------------------------------------


def _unescape_fragment(text: str) -> bytes:
    raw = text.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25:  # '%'
            pair = raw[i + 1 : i + 3]
            if len(pair) < 2 or not all(chr(c) in _HEX for c in pair):
                bad = raw[i : i + 3].decode("utf-8", "replace")
                raise _error(f'invalid URL escape "{bad}"')
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def _as_go_url_string(url: str) -> str:
    """``url.Parse(s).String()`` for a URL with an opaque part, which is what the decoder receives."""
    if _CONTROL.search(url):
        raise _error("net/url: invalid control character in URL")
    scheme, sep, rest = url.partition(":")
    if not sep or scheme.lower() != "data":
        raise _error("missing data prefix")
    rest, hashmark, fragment = rest.partition("#")
    result = "data:" + rest
    if hashmark:
        unescaped = _unescape_fragment(fragment)
        if unescaped:
            raw = fragment.encode("utf-8")
            if all(b in _FRAGMENT_VALID for b in raw):
                result += "#" + fragment
            else:
                result += "#" + "".join(chr(b) if b in _FRAGMENT_KEEP else f"%{b:02X}" for b in unescaped)
    return result


# --- the dataurl lexer ---------------------------------------------------------------------------------


def _is_token(c: str) -> bool:
    return c != "" and ord(c) <= 0x7F and ord(c) >= 0x21 and ord(c) != 0x7F and c not in _TSPECIALS


_DISCRETE = ("text", "image", "audio", "video", "application", "message", "multipart")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_NON_URL_CHAR = re.compile(r"[^\x21\x24-\x3b\x3d\x3f-\x5a\x5f\x61-\x7a\x7e]")
_NON_BASE64_CHAR = re.compile(r"[^A-Za-z0-9+/=\n]")


def _unescape_percent(text: str) -> bytes:
    """RFC 2396 unescaping as the decoder does it: every ``%`` needs two hex digits."""
    if not text.isascii():
        raise _error("rfc2396: non-ASCII char detected")
    bad = _BAD_ESCAPE.search(text)
    if bad is not None:
        if len(text) - bad.start() < 3:
            raise _error("rfc2396: unexpected end of unescape sequence")
        raise _error("rfc2396: invalid char 0x25 in unescape sequence")
    # Every escape is valid and the text has no whitespace, so quoted-printable decoding (in C) of
    # "%XX" rewritten as "=XX" gives the same bytes as unquoting, ~25 times faster on large files.
    return binascii.a2b_qp(text.replace("=", "=3D").replace("%", "="))


_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_SIMPLE_ESCAPES.update({"\\": "\\", '"': '"'})


def _go_unquote(body: str) -> str:
    """Go's ``strconv.Unquote`` of ``"body"``: the escapes a Go string literal allows, nothing else."""
    if "\n" in body:
        raise _error("invalid syntax in quoted parameter value")
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        esc = body[i + 1 : i + 2]
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
            i += 2
            continue
        width = {"x": 2, "u": 4, "U": 8}.get(esc)
        if width is not None:
            digits = body[i + 2 : i + 2 + width]
            if len(digits) < width or not all(h in _HEX for h in digits):
                raise _error("invalid syntax in quoted parameter value")
            value = int(digits, 16)
            if esc != "x" and (value > 0x10FFFF or 0xD800 <= value <= 0xDFFF):
                raise _error("invalid syntax in quoted parameter value")
            out.append(chr(value))
            i += 2 + width
            continue
        octal = body[i + 1 : i + 4]
        if len(octal) == 3 and all(o in "01234567" for o in octal) and int(octal, 8) <= 255:
            out.append(chr(int(octal, 8)))
            i += 4
            continue
        raise _error("invalid syntax in quoted parameter value")
    return "".join(out)


class _Lexer:
    """The states of the upstream lexer, with the parser's actions applied as items are found."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.pos = len("data:")
        self.start = self.pos
        self.result = DataURL(data=b"")
        self.attr = ""
        self.seen_base64 = False

    def next(self) -> str:
        """The next character, or "" at the end (upstream's eof)."""
        if self.pos >= len(self.s):
            self.pos = len(self.s) + 1  # so that backup() after eof is harmless
            return ""
        c = self.s[self.pos]
        self.pos += 1
        return c

    def backup(self) -> None:
        self.pos -= 1

    def take(self) -> str:
        value = self.s[self.start : self.pos]
        self.start = self.pos
        return value

    def run(self) -> DataURL:
        c = self.next()
        if c == ";":
            self.backup()
            return self.param_semicolon()
        if c == ",":
            self.backup()
            return self.data_comma()
        if c == "":
            raise _error("missing comma before data")
        if c in "xX":
            if self.next() == "-":
                return self.media_type(x_token=True)
            return self.media_type(x_token=False)
        if _is_token(c):
            return self.media_type(x_token=False)
        raise _error("invalid character after data prefix")

    def media_type(self, *, x_token: bool) -> DataURL:
        while True:
            c = self.next()
            if c == "/":
                self.backup()
                kind = self.s[self.start : self.pos]
                if not x_token and not kind.startswith(_DISCRETE):
                    raise _error("invalid media type")
                break
            if c == "":
                raise _error("missing media type slash")
            if not _is_token(c):
                raise _error("invalid character for media type")
        kind = self.take()
        self.next()  # the slash
        self.take()
        while True:
            c = self.next()
            if c in (";", ","):
                self.backup()
                break
            if c == "":
                raise _error("incomplete media type")
            if not _is_token(c):
                raise _error("invalid character for media subtype")
        subtype = self.take() or "plain"  # upstream keeps its default subtype when it is empty
        self.result.media_type = f"{kind}/{subtype}"
        self.result.params.pop("charset", None)
        return self.after_value()

    def after_value(self) -> DataURL:
        c = self.next()
        if c == ";":
            self.backup()
            return self.param_semicolon()
        if c == ",":
            self.backup()
            return self.data_comma()
        if c == "":
            raise _error("missing comma before data")
        raise _error("expected semicolon or comma")

    def param_semicolon(self) -> DataURL:
        self.next()
        self.take()
        c = self.next()
        if c in ("", "=", ","):
            raise _error("unterminated parameter sequence")
        if not _is_token(c):
            raise _error("invalid character for parameter attribute")
        while True:
            c = self.next()
            if c == "=":
                self.backup()
                self.attr = self.take()
                self.next()
                self.take()
                return self.param_value()
            if c == ",":
                self.backup()
                word = self.take()
                if word != "base64":
                    raise _error(f"expected base64, got {word}")
                self.seen_base64 = True
                self.result.base64 = True
                return self.data_comma()
            if c == "":
                raise _error("unterminated parameter sequence")
            if not _is_token(c):
                raise _error("invalid character for parameter attribute")

    def param_value(self) -> DataURL:
        c = self.next()
        if c == '"':
            self.take()
            while True:
                c = self.next()
                if c == "":
                    raise _error("unclosed quoted string")
                if c == "\\":
                    escaped = self.next()
                    if escaped == "":
                        raise _error("unclosed quoted string")
                    if ord(escaped) > 0x7F:
                        raise _error("invalid escaped character")
                    continue
                if c == '"':
                    self.backup()
                    break
                if ord(c) > 0x7F:
                    raise _error("invalid character for parameter value")
            value = _go_unquote(self.take())
            if value:  # upstream records no parameter for an empty quoted string
                self.result.params[self.attr] = value
            self.next()  # closing quote
            self.take()
            return self.after_value()
        if c == "":
            raise _error("missing comma before data")
        if not _is_token(c):
            raise _error("invalid character for parameter value")
        while True:
            c = self.next()
            if c in (";", ","):
                self.backup()
                break
            if c == "":
                raise _error("missing comma before data")
            if not _is_token(c):
                raise _error("invalid character for parameter value")
        self.result.params[self.attr] = _unescape_percent(self.take()).decode("latin-1")
        return self.after_value()

    def data_comma(self) -> DataURL:
        self.next()
        self.take()
        body = self.s[self.pos :]
        if self.seen_base64:
            if _NON_BASE64_CHAR.search(body):
                raise _error("invalid data character")
            try:
                self.result.data = binascii.a2b_base64(body.replace("\n", "").encode(), strict_mode=True)
            except binascii.Error as exc:
                raise _error(f"illegal base64 data ({exc})") from None
        else:
            if _NON_URL_CHAR.search(body):
                raise _error("invalid data character")
            self.result.data = _unescape_percent(body)
        return self.result
