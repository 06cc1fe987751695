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
# One lexer serves validation (``data_url_error``: the verdict and upstream's message) and fetching
# (``read_data_url``: the same verdicts, plus the media type, parameters and bytes).

_TSPECIALS = set('()<>@,;:\\"/[]?=')
_B64_DATA = re.compile(r"[A-Za-z0-9+/=\n]*")
# RFC 2396 data characters: printable ASCII but space and <>#"{}|\^[]` (written as the ranges they
# leave, since a negated class over all of Unicode costs milliseconds to compile on every run).
_URL_DATA = re.compile(r"[!$-;=?-Z_a-z~]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DISCRETE = ("text", "image", "audio", "video", "application", "message", "multipart")


class DataURLRejected(Exception):
    """``dataurl.DecodeString`` fails; the message is the decoder's."""


def _is_token(c: str) -> bool:
    return c.isascii() and ord(c) >= 0x20 and ord(c) != 0x7F and not c.isspace() and c not in _TSPECIALS


def _check_rfc2396(s: str) -> None:
    """Reject what the dataurl package's ``Unescape`` rejects (a regex finds the spot: data can be large)."""
    if not s.isascii():
        raise DataURLRejected("rfc2396: non-ASCII char detected")
    bad = _BAD_ESCAPE.search(s)
    if bad is None:
        return
    for c in s[bad.start() + 1 : bad.start() + 3]:
        if c not in _HEX:
            raise DataURLRejected("rfc2396: invalid char 0x25 in unescape sequence")
    raise DataURLRejected("rfc2396: unexpected end of unescape sequence")


def _unescape_percent(text: str) -> bytes:
    """The bytes of RFC 2396 text that ``_check_rfc2396`` accepted."""
    import binascii  # only when bytes are wanted: validation does not need it

    # Every escape is valid and the text has no whitespace, so quoted-printable decoding (in C) of
    # "%XX" rewritten as "=XX" gives the same bytes as unquoting, ~25 times faster on large files.
    return binascii.a2b_qp(text.replace("=", "=3D").replace("%", "="))


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


def _check_base64(payload: str) -> None:
    offset = go_base64_error(payload)
    if offset is not None:
        raise DataURLRejected(f"illegal base64 data at input byte {offset}")


def _base64_decode(payload: str) -> bytes:
    """Go's ``base64.StdEncoding.DecodeString`` of text made of the base64 alphabet, ``=`` and newlines."""
    import binascii  # only when bytes are wanted: validation does not need it

    text = payload.replace("\n", "").encode()
    try:
        # Strict mode accepts exactly the padded forms Go accepts, in C; Go's rules run only to
        # find the offset upstream reports.
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        _check_base64(payload)
    return binascii.a2b_base64(text)


_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_SIMPLE_ESCAPES.update({"\\": "\\", '"': '"'})


def _go_unquote(body: str) -> str | None:
    """Go's ``strconv.Unquote`` of ``"body"`` (ASCII), or ``None`` where it reports invalid syntax."""
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\n":
            return None
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1 : i + 2]
        if e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
            i += 2
        elif e in ("x", "u", "U"):
            n = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2 : i + 2 + n]
            if len(digits) != n or not all(d in _HEX for d in digits):
                return None
            value = int(digits, 16)
            if e != "x" and (value > 0x10FFFF or 0xD800 <= value <= 0xDFFF):
                return None
            out.append(chr(value))
            i += 2 + n
        else:
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or not all(d in "01234567" for d in digits) or int(digits, 8) > 255:
                return None
            out.append(chr(int(digits, 8)))
            i += 4
    return "".join(out)


class DataURLParts:
    """A transliteration of the dataurl lexer's states, so corner cases fail the same way.

    ``run`` raises ``DataURLRejected``; on success the attributes hold what the decoder would return
    (``data`` only when ``want_data``: validation needs the verdict, not the bytes).
    """

    def __init__(self, s: str, *, want_data: bool) -> None:
        self.s = s
        self.pos = 0
        self.start = 0
        self.width = 0
        self.want_data = want_data
        self.media_type = "text/plain"
        self.params = {"charset": "US-ASCII"}
        self.base64 = False
        self.data = b""

    def next(self) -> str | None:
        """The next character, or ``None`` at the end (upstream's eof)."""
        if self.pos >= len(self.s):
            self.width = 0
            return None
        self.width = 1
        c = self.s[self.pos]
        self.pos += 1
        return c

    def backup(self) -> None:
        self.pos -= self.width

    def take(self) -> str:
        value = self.s[self.start : self.pos]
        self.start = self.pos
        return value

    def run(self) -> DataURLParts:
        if not self.s.startswith("data:"):
            raise DataURLRejected("missing data prefix")
        self.pos = self.start = 5
        c = self.next()
        if c is None or c in ";,":
            self.backup()
        elif c in "xX":
            self.media_type_(discrete_check=self.next() != "-")
        elif _is_token(c):
            self.media_type_(discrete_check=True)
        else:
            raise DataURLRejected("invalid character after data prefix")
        while self.parameter_follows():
            self.parameter()
        self.data_()
        return self

    def parameter_follows(self) -> bool:
        """Past a separator: ``True`` after ``;`` (a parameter), ``False`` after ``,`` (the data)."""
        c = self.next()
        if c is None:
            raise DataURLRejected("missing comma before data")
        if c not in ";,":
            raise DataURLRejected("expected semicolon or comma")
        self.start = self.pos
        return c == ";"

    def media_type_(self, *, discrete_check: bool) -> None:
        while True:
            c = self.next()
            if c == "/":
                self.backup()
                if discrete_check and not self.s[self.start : self.pos].startswith(_DISCRETE):
                    raise DataURLRejected("invalid media type")
                break
            if c is None:
                raise DataURLRejected("missing media type slash")
            if not _is_token(c):
                raise DataURLRejected("invalid character for media type")
        kind = self.take()
        self.next()
        self.take()
        subtype = (
            self.tokens("incomplete media type", "invalid character for media subtype") or "plain"
        )  # upstream keeps its default subtype when it is empty
        self.media_type = f"{kind}/{subtype}"
        self.params.pop("charset", None)

    def parameter(self) -> None:
        c = self.next()
        if c is None or c in "=,":
            raise DataURLRejected("unterminated parameter sequence")
        if not _is_token(c):
            raise DataURLRejected("invalid character for parameter attribute")
        while True:
            c = self.next()
            if c == "=":
                break
            if c == ",":
                self.backup()
                attr = self.take()
                if attr != "base64":
                    raise DataURLRejected(f"expected base64, got {attr}")
                self.base64 = True
                return
            if c is None:
                raise DataURLRejected("unterminated parameter sequence")
            if not _is_token(c):
                raise DataURLRejected("invalid character for parameter attribute")
        attr = self.s[self.start : self.pos - 1]
        self.start = self.pos
        c = self.next()
        if c == '"':
            value = self.quoted_value()
        elif c is None:
            raise DataURLRejected("missing comma before data")
        elif _is_token(c):
            value = self.token_value()
        else:
            raise DataURLRejected("invalid character for parameter value")
        if value:  # upstream records no parameter for an empty quoted string
            self.params[attr] = value

    def quoted_value(self) -> str:
        self.start = self.pos
        while True:
            c = self.next()
            if c is None:
                raise DataURLRejected("unclosed quoted string")
            if c == "\\":
                c = self.next()
                if c is None:
                    raise DataURLRejected("unexpected eof")
                if not c.isascii():
                    raise DataURLRejected("invalid escaped character")
                continue
            if c == '"':
                break
            if not c.isascii():
                raise DataURLRejected("invalid character for parameter value")
        value = _go_unquote(self.s[self.start : self.pos - 1])
        if value is None:
            raise DataURLRejected("invalid syntax")
        return value

    def tokens(self, at_end: str, at_other: str) -> str:
        """Token characters up to a ``;`` or ``,`` (left unread); the messages say what else was met."""
        while True:
            c = self.next()
            if c is None:
                raise DataURLRejected(at_end)
            if c in ";,":
                self.backup()
                return self.take()
            if not _is_token(c):
                raise DataURLRejected(at_other)

    def token_value(self) -> str:
        raw = self.tokens("missing comma before data", "invalid character for parameter value")
        _check_rfc2396(raw)
        return _unescape_percent(raw).decode("latin-1") if self.want_data else raw

    def data_(self) -> None:
        payload = self.s[self.pos :]
        allowed = _B64_DATA if self.base64 else _URL_DATA
        if not allowed.fullmatch(payload):  # one regex instead of a loop: data URLs can be large
            raise DataURLRejected("invalid data character")
        if self.base64 and self.want_data:
            self.data = _base64_decode(payload)
        elif self.base64:
            _check_base64(payload)
        else:
            _check_rfc2396(payload)
            if self.want_data:
                self.data = _unescape_percent(payload)


def read_data_url(s: str) -> DataURLParts:
    """What ``dataurl.DecodeString`` returns for ``s``; raises ``DataURLRejected`` where it fails."""
    return DataURLParts(s, want_data=True).run()


def data_url_error(s: str) -> str | None:
    """Why ``dataurl.DecodeString`` rejects ``s``, or ``None`` when it accepts it."""
    try:
        DataURLParts(s, want_data=False).run()
    except DataURLRejected as exc:
        return str(exc)
    return None
