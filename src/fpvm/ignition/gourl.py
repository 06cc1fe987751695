"""Go's ``net/url.Parse`` and vincent-petithory/dataurl, as far as upstream's verdicts depend on them.

Whether a source is valid upstream depends on these libraries' corner cases (``http:foo`` parses,
``DATA:,x`` has scheme ``data`` but is no data URL, a host may not contain ``^``); both are followed
here from their documented behaviour and checked against upstream's validator.
"""

from __future__ import annotations

import re

from fpvm.ignition.records import dataclass

# --- net/url ---------------------------------------------------------------------------------------

_HEX = set("0123456789abcdefABCDEF")
_HOST_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!\"$&'()*+,-.:;<=>[]_~")
_USERINFO_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:~!$&'()*+,;=%@")


@dataclass
class GoURL:
    scheme: str = ""
    opaque: str = ""
    raw_query: str = ""


class URLError(Exception):
    """``url.Parse`` failed; the message follows Go's."""


def _unescape(s: str, mode: str) -> str:
    """Go's ``unescape``; only validity matters here, so the decoded text is approximate."""
    b = s.encode("utf-8", "surrogatepass")
    i = 0
    while i < len(b):
        c = b[i]
        if c == 0x25:  # '%'
            if i + 2 >= len(b) or chr(b[i + 1]) not in _HEX or chr(b[i + 2]) not in _HEX:
                raise URLError(f"invalid URL escape {b[i : i + 3].decode('utf-8', 'replace')!r}")
            seq = b[i : i + 3]
            if mode == "host" and int(chr(b[i + 1]), 16) < 8 and seq != b"%25":
                raise URLError(f"invalid URL escape {seq.decode()!r}")
            if mode == "zone":
                v = int(seq[1:].decode(), 16)
                if seq != b"%25" and v != 0x20 and chr(v) not in _HOST_OK:
                    raise URLError(f"invalid URL escape {seq.decode()!r}")
            i += 3
            continue
        if mode in ("host", "zone") and c < 0x80 and chr(c) not in _HOST_OK:
            raise URLError(f"invalid character {chr(c)!r} in host name")
        i += 1
    return s


def _valid_optional_port(port: str) -> bool:
    if port == "":
        return True
    return port[0] == ":" and all("0" <= c <= "9" for c in port[1:])


def _parse_host(host: str) -> None:
    open_idx = host.rfind("[")
    if open_idx > 0:
        raise URLError("invalid IP-literal")
    if open_idx == 0:
        close_idx = host.rfind("]")
        if close_idx < 0:
            raise URLError("missing ']' in host")
        colon_port = host[close_idx + 1 :]
        if not _valid_optional_port(colon_port):
            raise URLError(f"invalid port {colon_port!r} after host")
        _unescape(colon_port, "host")
        hostname = host[1:close_idx]
        zone_idx = hostname.find("%25")
        if zone_idx >= 0:
            addr = _unescape(hostname[:zone_idx], "host") + "%" + _unescape(hostname[zone_idx + 3 :], "zone")
        else:
            addr = _unescape(hostname, "host")
        import ipaddress  # only for bracketed IPv6 hosts: not worth its import on every run

        try:
            ipaddress.IPv6Address(addr)
        except ValueError:
            raise URLError("invalid host") from None
        return
    colon = host.rfind(":")
    if colon >= 0 and not _valid_optional_port(host[colon:]):
        raise URLError(f"invalid port {host[colon:]!r} after host")
    _unescape(host, "host")


def _parse_authority(authority: str) -> None:
    at = authority.rfind("@")
    _parse_host(authority[at + 1 :] if at >= 0 else authority)
    if at < 0:
        return
    userinfo = authority[:at]
    if not all(c in _USERINFO_OK for c in userinfo):
        raise URLError("net/url: invalid userinfo")
    for part in userinfo.split(":", 1):
        _unescape(part, "userinfo")


def _get_scheme(raw: str) -> tuple[str, str]:
    for i, c in enumerate(raw):
        if c.isascii() and c.isalpha():
            continue
        if c.isascii() and (c.isdigit() or c in "+-."):
            if i == 0:
                return "", raw
            continue
        if c == ":":
            if i == 0:
                raise URLError("missing protocol scheme")
            return raw[:i], raw[i + 1 :]
        return "", raw
    return "", raw


def parse_url(raw: str) -> GoURL:
    """Go's ``url.Parse``; raises ``URLError`` where Go returns an error."""
    u, _, frag = raw.partition("#")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in u):
        raise URLError("net/url: invalid control character in URL")
    url = GoURL()
    if u != "*":
        scheme, rest = _get_scheme(u)
        url.scheme = scheme.lower()
        if rest.endswith("?") and rest.count("?") == 1:
            rest = rest[:-1]
        else:
            rest, _, url.raw_query = rest.partition("?")
        if not rest.startswith("/"):
            if url.scheme:
                url.opaque = rest
                rest = ""
            elif ":" in rest.partition("/")[0]:
                raise URLError("first path segment in URL cannot contain colon")
        if not url.opaque:
            if (url.scheme or not rest.startswith("///")) and rest.startswith("//"):
                authority, slash, tail = rest[2:].partition("/")
                _parse_authority(authority)
                rest = slash + tail
            _unescape(rest, "path")
    if frag:
        _unescape(frag, "fragment")
    return url


def _query_unescape_ok(s: str) -> bool:
    try:
        _unescape(s, "query")
    except URLError:
        return False
    return True


def query_values(raw_query: str, key: str) -> list[str] | None:
    """The values ``url.Values`` holds for ``key`` (``None`` when absent); bad pairs are skipped as in Go."""
    found: list[str] | None = None
    for part in raw_query.split("&") if raw_query else []:
        if ";" in part or part == "":
            continue
        k, _, v = part.partition("=")
        if not (_query_unescape_ok(k) and _query_unescape_ok(v)):
            continue
        if _query_decode(k) == key:
            found = [*(found or []), _query_decode(v)]
    return found


def _query_decode(s: str) -> str:
    # Only S3 URLs' queries are read: urllib.parse (which brings ipaddress) is not worth its import
    # on every guest command.
    from urllib.parse import unquote_plus

    return unquote_plus(s)


# --- data URLs (vincent-petithory/dataurl) ---------------------------------------------------------

_TSPECIALS = set('()<>@,;:\\"/[]?=')
_B64_DATA = re.compile(r"[A-Za-z0-9+/=\n]*")
# RFC 2396 data characters: printable ASCII but space and <>#"{}|\^[]` (written as the ranges they
# leave, since a negated class over all of Unicode costs milliseconds to compile on every run).
_URL_DATA = re.compile(r"[!$-;=?-Z_a-z~]*")


def _is_token(c: str) -> bool:
    return c.isascii() and ord(c) >= 0x20 and ord(c) != 0x7F and not c.isspace() and c not in _TSPECIALS


def _rfc2396_unescape(s: str) -> str | None:
    """Why the dataurl package's ``Unescape`` rejects ``s`` (``None`` if it does not)."""
    if not s.isascii():
        return "rfc2396: non-ASCII char detected"
    i = 0
    while i < len(s):
        if s[i] == "%":
            for j in (i + 1, i + 2):
                if j >= len(s):
                    return "rfc2396: unexpected end of unescape sequence"
                if s[j] not in _HEX:
                    return "rfc2396: invalid char 0x25 in unescape sequence"
            i += 3
            continue
        i += 1
    return None


_B64_ALPHABET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def go_base64_error(src: str) -> int | None:
    """Offset Go's ``base64.StdEncoding`` reports as corrupt (``None`` if it decodes); newlines skipped."""
    n = len(src)
    si = 0
    while si < n:
        j = 0
        while j < 4:
            if si == n:
                if j == 0:
                    return None
                return si - j
            c = src[si]
            si += 1
            if c in _B64_ALPHABET:
                j += 1
                continue
            if c in "\n\r":
                continue
            if c != "=" or j < 2:
                return si - 1
            if j == 2:
                while si < n and src[si] in "\r\n":
                    si += 1
                if si == n:
                    return n
                if src[si] != "=":
                    return si - 1
                si += 1
            while si < n and src[si] in "\r\n":
                si += 1
            return si if si < n else None
    return None


def _go_unquote_ok(body: str) -> bool:
    """``strconv.Unquote`` of a double-quoted ASCII string body."""
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\n":
            return False
        if c != "\\":
            i += 1
            continue
        if i + 1 >= len(body):
            return False
        e = body[i + 1]
        if e in 'abfnrtv\\"':
            i += 2
        elif e in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2 : i + 2 + n]
            if len(digits) != n or not all(d in _HEX for d in digits):
                return False
            value = int(digits, 16)
            if e != "x" and (value > 0x10FFFF or 0xD800 <= value <= 0xDFFF):
                return False
            i += 2 + n
        elif e in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or not all(d in "01234567" for d in digits) or int(digits, 8) > 255:
                return False
            i += 4
        else:
            return False
    return True


class _DataURLLexer:
    """A transliteration of the dataurl lexer's states, so corner cases fail the same way."""

    def __init__(self, s: str) -> None:
        self.s = s
        self.pos = 0
        self.start = 0
        self.width = 0
        self.base64 = False
        self.error: str | None = None
        self.items: list[tuple[str, str]] = []

    def next(self) -> str | None:
        if self.pos >= len(self.s):
            self.width = 0
            return None
        self.width = 1
        c = self.s[self.pos]
        self.pos += 1
        return c

    def backup(self) -> None:
        self.pos -= self.width

    def emit(self, kind: str) -> None:
        self.items.append((kind, self.s[self.start : self.pos]))
        self.start = self.pos

    def fail(self, msg: str) -> None:
        self.error = msg

    def run(self) -> None:
        if not self.s.startswith("data:"):
            return self.fail("missing data prefix")
        self.pos = 5
        self.emit("prefix")
        c = self.next()
        if c == ";":
            self.backup()
            return self.params()
        if c == ",":
            self.backup()
            return self.data()
        if c is None:
            return self.fail("missing comma before data")
        if c in "xX":
            if self.next() == "-":
                return self.media_type(discrete_check=False)
            return self.media_type(discrete_check=True)
        if _is_token(c):
            return self.media_type(discrete_check=True)
        return self.fail("invalid character after data prefix")

    def media_type(self, discrete_check: bool) -> None:
        while True:
            c = self.next()
            if c == "/":
                self.backup()
                kind = self.s[self.start : self.pos]
                if discrete_check and not kind.startswith(
                    ("text", "image", "audio", "video", "application", "message", "multipart")
                ):
                    return self.fail("invalid media type")
                break
            if c is None:
                return self.fail("missing media type slash")
            if not _is_token(c):
                return self.fail("invalid character for media type")
        self.emit("type")
        self.next()
        self.emit("sep")
        while True:
            c = self.next()
            if c in (";", ","):
                self.backup()
                break
            if c is None:
                return self.fail("incomplete media type")
            if not _is_token(c):
                return self.fail("invalid character for media subtype")
        self.emit("subtype")
        c = self.next()
        if c == ";":
            self.backup()
            return self.params()
        if c == ",":
            self.backup()
            return self.data()
        if c is None:
            return self.fail("missing comma before data")
        return self.fail("expected semicolon or comma")

    def params(self) -> None:
        while True:  # at a ';'
            self.next()
            self.emit("semicolon")
            c = self.next()
            if c is None or c in "=,":
                return self.fail("unterminated parameter sequence")
            if not _is_token(c):
                return self.fail("invalid character for parameter attribute")
            self.backup()
            while True:
                c = self.next()
                if c == "=":
                    self.backup()
                    break
                if c == ",":
                    self.backup()
                    attr = self.s[self.start : self.pos]
                    if attr != "base64":
                        return self.fail(f"expected base64, got {attr}")
                    self.base64 = True
                    self.emit("base64")
                    return self.data()
                if c is None:
                    return self.fail("unterminated parameter sequence")
                if not _is_token(c):
                    return self.fail("invalid character for parameter attribute")
            self.emit("attr")
            self.next()
            self.emit("equal")
            c = self.next()
            if c == '"':
                self.emit("lquote")
                while True:
                    c = self.next()
                    if c is None:
                        return self.fail("unclosed quoted string")
                    if c == "\\":
                        c = self.next()
                        if c is None:
                            return self.fail("unexpected eof")
                        if not c.isascii():
                            return self.fail("invalid escaped character")
                        continue
                    if c == '"':
                        self.backup()
                        break
                    if not c.isascii():
                        return self.fail("invalid character for parameter value")
                if not _go_unquote_ok(self.s[self.start : self.pos]):
                    return self.fail("invalid syntax")
                self.emit("value")
                self.next()
                self.emit("rquote")
            elif c is None:
                return self.fail("missing comma before data")
            elif _is_token(c):
                while True:
                    c = self.next()
                    if c in (";", ","):
                        self.backup()
                        break
                    if c is None:
                        return self.fail("missing comma before data")
                    if not _is_token(c):
                        return self.fail("invalid character for parameter value")
                err = _rfc2396_unescape(self.s[self.start : self.pos])
                if err:
                    return self.fail(err)
                self.emit("value")
            else:
                return self.fail("invalid character for parameter value")
            c = self.next()
            if c == ";":
                self.backup()
                continue
            if c == ",":
                self.backup()
                return self.data()
            if c is None:
                return self.fail("missing comma before data")
            return self.fail("expected semicolon or comma")

    def data(self) -> None:
        self.next()
        self.emit("comma")
        payload = self.s[self.pos :]
        allowed = _B64_DATA if self.base64 else _URL_DATA
        if not allowed.fullmatch(payload):  # one regex instead of a loop: data URLs can be large
            return self.fail("invalid data character")
        self.pos = len(self.s)
        if self.base64:
            offset = go_base64_error(payload)
            if offset is not None:
                return self.fail(f"illegal base64 data at input byte {offset}")
        else:
            err = _rfc2396_unescape(payload)
            if err:
                return self.fail(err)
        return None


def data_url_error(s: str) -> str | None:
    """Why ``dataurl.DecodeString`` rejects ``s``, or ``None`` when it accepts it."""
    lexer = _DataURLLexer(s)
    lexer.run()
    return lexer.error
