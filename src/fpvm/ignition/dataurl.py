"""``data:`` URLs (RFC 2397) accepted and rejected exactly as upstream Ignition does.

Ignition parses the source with Go's ``net/url`` and hands ``url.String()`` to the
``vincent-petithory/dataurl`` decoder. Both steps shape what is valid, so both are reproduced here:

* ``net/url``: control characters are rejected, the scheme is lower-cased, an empty fragment
  (``data:,x#``) disappears and a non-empty fragment is re-escaped;
* ``dataurl``: a hand-written lexer, reproduced once in ``gourl`` for validation and fetching alike
  (validation gives it the raw string, fetching the round-tripped one). The media type must start
  with text/image/audio/video/application/message/multipart (prefix match, case-sensitive) or
  ``x-``; parameters are tokens with a token or quoted-string value; ``;base64`` must be the last
  parameter and is spelled in lower case; plain data may only contain RFC 2396 URL characters (no
  space, ``#``, ``"``, ``<>{}|\\^[]`` or backquote) with valid ``%XX`` escapes; base64 data must be
  padded standard base64.

This module adds the ``net/url`` round trip and the bytes, as a ``SourceError``-raising API.
"""

from __future__ import annotations

import re

from fpvm.ignition import gourl
from fpvm.ignition.records import dataclass, field
from fpvm.ignition.srcerrors import SourceError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
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
    """Parse a ``data:`` URL into its media type, parameters and bytes.

    The decoder is the validator's (``gourl``), so fetching and validation cannot disagree on the
    string the decoder sees; only the ``net/url`` round trip before it is fetching's own.
    """
    text = _as_go_url_string(url)
    try:
        parts = gourl.read_data_url(text)
    except gourl.DataURLRejected as exc:
        raise _error(str(exc)) from None
    return DataURL(parts.data, parts.media_type, parts.params, parts.base64)


# Bytes Go's url.PathEscape leaves alone (shouldEscape(c, encodePathSegment) is false).
_PATH_SEGMENT_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~$&+:=@")


def encode(data: bytes | str) -> str:
    """The data URL podman writes for ``data``: ``"data:," + url.PathEscape(contents)``.

    The one encoder (``fpvm machine`` writes its config with it, tests build configs with it). Every
    byte ``decode`` would refuse in plain data is escaped, so ``decode(encode(x)) == x`` for all x.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return "data:," + "".join(chr(b) if b in _PATH_SEGMENT_KEEP else f"%{b:02X}" for b in raw)


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
