"""The Go library behaviour upstream's verdicts depend on, pinned with the cases that surprised us.

Each expectation was confirmed against upstream's ignition-validate (through a config using it).
"""

from __future__ import annotations

import pytest

from fpvm.ignition import gocompat
from fpvm.ignition.unitfile import UnitSyntaxError, has_install_section, parse_unit, unit_error


@pytest.mark.parametrize(
    ("given", "cleaned"),
    [
        ("/a/b", "/a/b"),
        ("//a", "/a"),
        ("/a/../b", "/b"),
        ("/..", "/"),
        ("", "."),
        ("a/../..", ".."),
        ("/a/", "/a"),
    ],
)
def test_path_clean(given: str, cleaned: str) -> None:
    assert gocompat.clean(given) == cleaned


def test_semver() -> None:
    assert gocompat.parse_semver("3.2.0") == gocompat.SemVer(3, 2, 0)
    assert gocompat.parse_semver("03.2.0") == gocompat.SemVer(3, 2, 0)
    assert gocompat.parse_semver("3.7.0-experimental") == gocompat.SemVer(3, 7, 0, "experimental")
    assert gocompat.parse_semver("3.0.0+meta") == gocompat.SemVer(3, 0, 0, "", "meta")
    for bad in ("3.0", "v3.0.0", "+3.0.0", "3.0.0-a..b", "9223372036854775808.0.0", " 3.0.0"):
        assert gocompat.parse_semver(bad) is None, bad


@pytest.mark.parametrize(
    ("url", "scheme", "ok"),
    [
        ("HTTP://x", "http", True),
        ("http:foo", "http", True),  # opaque form parses
        ("http://[::1]:80/", "http", True),
        ("http://[::1", "", False),
        ("http://x:abc/", "", False),
        ("http://a b/", "", False),
        ("http://x/%zz", "", False),
        ("http://x#%zz", "", False),
        (":foo", "", False),
        ("http://x\x01", "", False),
        ("http://us er@host/", "", False),
    ],
)
def test_url_parse(url: str, scheme: str, ok: bool) -> None:
    if ok:
        assert gocompat.parse_url(url).scheme == scheme
    else:
        with pytest.raises(gocompat.URLError):
            gocompat.parse_url(url)


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("data:,hello", None),
        ("data:;base64,aGVsbG8=", None),
        ("data:;base64,aGVsbG8", "illegal base64 data at input byte 4"),
        ("data:;base64,Q===", "illegal base64 data at input byte 1"),
        ("data:text/plain;charset=utf-8,x", None),
        ("data:foo/bar,x", "invalid media type"),
        ("data:x-foo/bar,x", None),
        ("DATA:,x", "missing data prefix"),
        ("data:,a b", "invalid data character"),
        ("data:,a%zz", "rfc2396: invalid char 0x25 in unescape sequence"),
        ("data:;a,x", "expected base64, got a"),
        ("data:", "missing comma before data"),
    ],
)
def test_data_urls(url: str, error: str | None) -> None:
    assert gocompat.data_url_error(url) == error


def test_query_values_like_url_values() -> None:
    assert gocompat.query_values("versionId=", "versionId") == [""]
    assert gocompat.query_values("a=1&versionId=2", "versionId") == ["2"]
    assert gocompat.query_values("versionId=1;x", "versionId") is None  # semicolons are rejected pairs
    assert gocompat.query_values("", "versionId") is None


def test_unit_lexer_sections_and_errors() -> None:
    options = parse_unit("# c\n[Unit]\nDescription=x \\\n y\n[Install]\nWantedBy=multi-user.target\n")
    assert [(o.section, o.name) for o in options] == [("Unit", "Description"), ("Install", "WantedBy")]
    assert has_install_section(options)
    assert not has_install_section(parse_unit("[Install]\n"))  # a section without options does not count
    assert unit_error("[Unit") == "invalid unit content: unable to find end of section"
    assert unit_error("[Unit]\nFoo") == "invalid unit content: EOF"
    assert unit_error("[Unit] x\n") == 'invalid unit content: found garbage after section name : "x"'
    assert unit_error("[Unit]\nFoo\nBar=1") == (
        "invalid unit content: unexpected newline encountered while parsing option name"
    )
    assert unit_error(None) is None and unit_error("") is None


def test_unit_line_limit_follows_the_buffered_reader() -> None:
    # go-systemd refuses when 2048 buffered bytes hold no newline at the start of a lexer step.
    assert (
        unit_error("[Unit]\nA=" + "x" * 3000 + "\n") == "invalid unit content: line too long (max 2048 bytes)"
    )
    assert unit_error("[Unit]\nA=" + "x" * 2000 + "\n") is None
    # A long comment is consumed in one step once the buffer has been refilled past it.
    with pytest.raises(UnitSyntaxError):
        parse_unit("x" * 2100)
