"""data: URLs decoded and rejected as upstream Ignition (vincent-petithory/dataurl behind net/url) does.

Cases are written from the decoder's grammar: RFC 2397 with its lexer's particular choices (media
type prefixes, lower-case ``base64`` as last parameter, RFC 2396 characters in plain data, padded
standard base64).
"""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpvm.ignition import dataurl
from fpvm.ignition.dataurl import DataURLError
from fpvm.ignition.srcerrors import SourceError

ACCEPTED = [
    ("data:,example%20file%0A", b"example file\n"),  # podman's form (url.PathEscape)
    ("data:;base64,ZXhhbXBsZSBmaWxlCg==", b"example file\n"),
    ("data:,", b""),
    ("data:;base64,", b""),
    ("data:text/plain;charset=utf-8;base64,YQ==", b"a"),
    ("data:application/octet-stream;base64,AAEC/w==", b"\x00\x01\x02\xff"),
    ("data:text/plain;charset=US-ASCII,hi", b"hi"),
    ('data:text/plain;name="quoted, with comma",x', b"x"),
    ("data:x-custom/thing,y", b"y"),
    ("data:textual/anything,z", b"z"),  # the media type check is a prefix match
    ("data:,a?b=c&d", b"a?b=c&d"),
    ("data:,%E2%9C%93", "✓".encode()),
    ("data:,-_.!~*'()", b"-_.!~*'()"),
    ("data:,a=b%3d%7e=3D", b"a=b=~=3D"),  # raw "=" and lower-case escapes
    ("data:;base64,YR==", b"a"),  # non-zero padding bits are accepted (non-strict Go decoding)
    ("DATA:,x", b"x"),  # net/url lower-cases the scheme before the decoder sees it
    ("data:,a#", b"a"),  # an empty fragment disappears in url.String()
]


@pytest.mark.parametrize(("url", "data"), ACCEPTED)
def test_accepted(url: str, data: bytes) -> None:
    assert dataurl.decode(url) == data


def test_round_trip_of_podmans_encoding() -> None:
    payload = bytes(range(256)) + "ünïcode\n".encode()
    url = "data:," + urllib.parse.quote(payload, safe="")
    assert dataurl.decode(url) == payload
    assert dataurl.decode(dataurl.encode(payload)) == payload
    assert dataurl.decode("data:;base64," + base64.b64encode(payload).decode()) == payload


def test_media_type_and_parameters_are_kept() -> None:
    parsed = dataurl.parse("data:text/html;charset=utf-8;q=%41,x")
    assert parsed.media_type == "text/html"
    assert parsed.params == {"charset": "utf-8", "q": "A"}
    default = dataurl.parse("data:,x")
    assert default.media_type == "text/plain" and default.params == {"charset": "US-ASCII"}
    assert dataurl.parse("data:;base64,YQ==").base64


REJECTED = [
    ("data:", "missing comma before data"),
    ("data:text/plain", "incomplete media type"),
    ("data:text", "missing media type slash"),
    ("data:foo/bar,x", "invalid media type"),
    ("data:TEXT/plain,x", "invalid media type"),  # case-sensitive prefix
    ("data:/plain,x", "invalid character after data prefix"),
    ("data:,hello world", "invalid data character"),  # spaces must be escaped
    ("data:,a#b", "invalid data character"),
    ('data:,say "hi"', "invalid data character"),
    ("data:,50%", "unexpected end of unescape sequence"),
    ("data:,%zz", "invalid char"),
    ("data:,caf\u00e9", "invalid data character"),
    ("data:;BASE64,YQ==", "expected base64, got BASE64"),
    ("data:;charset,x", "expected base64, got charset"),
    ("data:;base64;x=y,YQ==", "invalid character for parameter attribute"),
    ("data:;base64,YQ", "illegal base64 data"),
    ("data:;base64,YQ==YQ==", "illegal base64 data"),
    ("data:;base64,Y Q==", "invalid data character"),
    ("data:;base64,YQ%3D%3D", "invalid data character"),
    ("data:text/plain;=x,y", "unterminated parameter sequence"),
    ("data:text/plain;a=,y", "invalid character for parameter value"),
    ('data:text/plain;a="x,y', "unclosed quoted string"),
    ('data:text/plain;a="\\q",y', "invalid syntax"),
    ("data:text/plain;a=b", "missing comma before data"),
    ("data:text/plain x,y", "invalid character for media subtype"),
    ("data:,a\nb", "invalid control character"),
    ("data:,a\tb", "invalid control character"),
    ("data:xy/z,a", "invalid media type"),
]


@pytest.mark.parametrize(("url", "reason"), REJECTED)
def test_rejected(url: str, reason: str) -> None:
    with pytest.raises(DataURLError, match="invalid data URL") as info:
        dataurl.decode(url)
    assert reason in str(info.value)


def test_errors_are_the_engines_error_type() -> None:
    with pytest.raises(SourceError) as info:
        dataurl.decode("data:,bad url")
    assert info.value.report.errors[0].path == "$"


# Fetching sees url.String(); validation (gocompat) sees the raw string. They differ only in these.
_NET_URL_ONLY = {"DATA:,x", "data:,a#"}


@pytest.mark.parametrize("url", [u for u, _ in ACCEPTED + REJECTED if u not in _NET_URL_ONLY])
def test_same_verdict_as_the_validator(url: str) -> None:
    """Fetching (dataurl, after net/url normalisation) and validation (gourl) must agree on every string."""
    from fpvm.ignition import gocompat

    try:
        dataurl.decode(url)
        fetch_ok = True
    except DataURLError:
        fetch_ok = False
    assert fetch_ok == (gocompat.data_url_error(url) is None)


_ALPHABET = 'data:/;,="\\%#?xXt-ebas64YQ=+ 0aé\t'


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=30))
def test_only_the_engines_error_escapes_and_verdicts_agree(tail: str) -> None:
    url = "data:" + tail
    try:
        dataurl.decode(url)
        fetch_ok = True
    except DataURLError:
        fetch_ok = False
    if "#" not in url:  # a fragment is where url.String() and the raw string differ
        from fpvm.ignition import gocompat

        assert fetch_ok == (gocompat.data_url_error(url) is None), url
