"""fetch(): data URLs, compression, verification and the schemes the fpvm guest cannot fetch."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpvm.ignition import model
from fpvm.ignition.dataurl import encode
from fpvm.ignition.http import FetchOptions
from fpvm.ignition.resources import decompress, fetch, fetch_url
from fpvm.ignition.srcerrors import SourceError


def b64url(data: bytes) -> str:
    return "data:;base64," + base64.b64encode(data).decode()


def test_fetch_resource_from_data_url() -> None:
    resource = model.Resource(source="data:,example%20file%0A")
    assert fetch(resource) == b"example file\n"


def test_gzip_data_url_with_hash_of_decompressed_content() -> None:
    content = b"#!/bin/sh\necho hello\n"
    resource = model.Resource(
        source=b64url(gzip.compress(content)),
        compression="gzip",
        verification=model.Verification("sha256-" + hashlib.sha256(content).hexdigest()),
    )
    assert fetch(resource) == content


def test_hash_of_compressed_bytes_does_not_verify() -> None:
    content = b"payload"
    packed = gzip.compress(content)
    resource = model.Resource(
        source=b64url(packed),
        compression="gzip",
        verification=model.Verification("sha512-" + hashlib.sha512(packed).hexdigest()),
    )
    with pytest.raises(SourceError, match=r"hash verification failed \(calculated [0-9a-f]{128} but"):
        fetch(resource, path="$.storage.files[2].contents")


def test_error_names_the_json_path() -> None:
    resource = model.Resource(source="data:,x", verification=model.Verification("sha512-" + "0" * 128))
    with pytest.raises(SourceError) as info:
        fetch(resource, path="$.storage.files[2].contents")
    assert info.value.report.errors[0].path == "$.storage.files[2].contents"
    assert str(info.value).startswith("$.storage.files[2].contents: hash verification failed")


def test_uppercase_hex_digest_verifies_file_contents() -> None:
    digest = hashlib.sha256(b"x").hexdigest().upper()
    assert fetch_url("data:,x", verification=f"sha256-{digest}") == b"x"


@pytest.mark.parametrize(
    ("verification", "message"),
    [
        ("sha512", "malformed hash specifier"),
        ("md5-00", "unrecognized hash function"),
        ("sha256-zz", "malformed hash specifier"),
    ],
)
def test_bad_hash_specifiers(verification: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        fetch_url("data:,x", verification=verification)


@pytest.mark.parametrize(
    "scheme", ["tftp://10.0.0.1/config.ign", "s3://bucket/key", "gs://b/o", "arn:aws:s3:::b/k"]
)
def test_valid_but_unsupported_schemes(scheme: str) -> None:
    with pytest.raises(SourceError, match="not supported by the fpvm guest"):
        fetch_url(scheme)


def test_unknown_scheme() -> None:
    with pytest.raises(SourceError, match="unsupported source scheme 'file'"):
        fetch_url("file:///etc/passwd")


def test_empty_source_is_nothing_and_is_not_verified() -> None:
    assert fetch_url("", verification="sha512-" + "0" * 128) == b""


def test_missing_source() -> None:
    with pytest.raises(SourceError, match="source is required"):
        fetch(model.Resource())


def test_invalid_compression_method() -> None:
    with pytest.raises(SourceError, match="invalid compression method 'xz'"):
        fetch_url("data:,x", compression="xz")


def test_empty_compression_means_none() -> None:
    assert fetch_url("data:,x", compression="") == b"x"


def test_gzip_of_plain_data_is_an_error() -> None:
    with pytest.raises(SourceError, match="invalid gzip data"):
        fetch_url("data:,not-gzip", compression="gzip")
    with pytest.raises(SourceError, match="invalid gzip data"):
        fetch_url("data:,", compression="gzip")


def test_gzip_members_are_concatenated_and_truncation_is_caught() -> None:
    two = gzip.compress(b"one ") + gzip.compress(b"two")
    assert decompress(two, "gzip") == b"one two"
    with pytest.raises(SourceError, match="unexpected EOF"):
        decompress(gzip.compress(b"abcdef" * 100)[:-10], "gzip")
    with pytest.raises(SourceError, match="invalid gzip data"):
        decompress(gzip.compress(b"x") + b"trailing garbage", "gzip")


def test_invalid_data_url_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="invalid data URL: invalid data character"):
        fetch(model.Resource(source="data:,two words"))


def test_header_rules_apply_to_every_scheme() -> None:
    with pytest.raises(SourceError, match="HTTP header name can't be empty"):
        fetch_url("data:,x", headers=[("", "v")])


def test_encode_is_what_podman_writes() -> None:
    assert encode(b"a b\n") == "data:,a%20b%0A"


_PIECES = st.sampled_from(
    ["data:", "http://127.0.0.1:1/", "https://127.0.0.1:1/", "tftp://", "s3://", "x:", ",", ";", "base64",
     "%", "%4", "=", "#", "?", " ", "é", "\n", "[", "]", "@", ":", "/", "a", "YQ==", "-", "sha512", "0"]
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_PIECES, max_size=8).map("".join),
    st.sampled_from([None, "", "gzip", "zip"]),
    st.one_of(st.none(), st.lists(_PIECES, max_size=3).map("".join)),
)
def test_only_source_errors_escape(url: str, compression: str | None, verification: str | None) -> None:
    options = FetchOptions(total_timeout=0.05, initial_backoff=0.01)
    with contextlib.suppress(SourceError):  # any other exception fails the test
        fetch_url(url, compression=compression, verification=verification, options=options)
