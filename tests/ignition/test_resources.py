"""The one resource layer: gzip as Go's multistream reader, the 64 MiB cap, the boot's fetch budget.

Network cases run against a real HTTP server on 127.0.0.1 (``ignition_http``) or a closed loopback
port; time is asserted through the ``Budget`` object (attempts, fetches, seconds on an injected
clock), never with wall-clock measurements.
"""

from __future__ import annotations

import contextlib
import gzip
import struct
import zlib
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ignition_http import LocalServer, Reply, serve

from fpvm.ignition import model
from fpvm.ignition.http import FetchOptions
from fpvm.ignition.resolve import DEFAULT_MAX_REFERENCES, resolve
from fpvm.ignition.resources import MAX_RESOURCE_BYTES, Budget, decompress, fetch_url, verify
from fpvm.ignition.srcerrors import SourceError

BODY = b"line of text\n" * 200
PACKED = gzip.compress(BODY)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    yield from serve()


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- gzip: Go's gzip.Reader (multistream) is the reference --------------------------------------------


def test_every_member_of_a_multi_member_stream_is_read() -> None:
    three = gzip.compress(b"one ") + gzip.compress(b"") + gzip.compress(b"three")
    assert decompress(three, "gzip") == b"one three"


def _with_trailer(crc: int | None = None, size: int | None = None) -> bytes:
    crc = zlib.crc32(BODY) if crc is None else crc
    size = len(BODY) if size is None else size
    return PACKED[:-8] + struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (PACKED[: len(PACKED) // 2], "unexpected EOF"),  # cut inside the deflate stream
        (PACKED[:-3], "unexpected EOF"),  # cut inside the CRC/length trailer
        (PACKED[:5], "unexpected EOF"),  # cut inside the header
        (_with_trailer(crc=zlib.crc32(BODY) ^ 1), "incorrect data check"),
        (_with_trailer(size=len(BODY) + 1), "incorrect length check"),
        (PACKED + b"trailing garbage", "incorrect header check"),
        (PACKED + b"\0\0\0\0", "invalid gzip data"),  # Go rejects trailing zeros too
        (PACKED + PACKED[:10], "unexpected EOF"),  # a second member cut short
        (b"plain text, not gzip", "incorrect header check"),
        (b"", "EOF"),
    ],
    ids=["truncated", "truncated-trailer", "truncated-header", "bad-crc", "bad-length", "trailing-garbage",
         "trailing-zeros", "truncated-second-member", "not-gzip", "empty"],
)  # fmt: skip
def test_damaged_streams_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        decompress(data, "gzip")


def test_output_is_capped_at_64_mib() -> None:
    assert MAX_RESOURCE_BYTES == 64 * 1024 * 1024
    exact = gzip.compress(b"\0" * MAX_RESOURCE_BYTES, compresslevel=1)
    assert len(decompress(exact, "gzip")) == MAX_RESOURCE_BYTES
    with pytest.raises(SourceError, match=f"larger than the limit of {MAX_RESOURCE_BYTES} bytes"):
        decompress(exact + gzip.compress(b"\0"), "gzip")


def test_cap_counts_all_members_together() -> None:
    members = gzip.compress(b"a" * 600) * 2
    assert len(decompress(members, "gzip", limit=1200)) == 1200
    with pytest.raises(SourceError, match="larger than the limit of 1199 bytes"):
        decompress(members, "gzip", limit=1199)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_gzip_raise_only_source_errors(data: bytes) -> None:
    with contextlib.suppress(SourceError):  # anything else (zlib.error, EOFError, ...) fails the test
        decompress(data, "gzip", limit=4096)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 2000), st.binary(max_size=8), st.integers(0, 255))
def test_damaged_real_gzip_raises_only_source_errors(
    payload: bytes, cut: int, tail: bytes, flip: int
) -> None:
    """Real streams, truncated, extended and bit-flipped: deeper paths than random bytes reach."""
    packed = bytearray(gzip.compress(payload) * 2)
    if packed:
        packed[flip % len(packed)] ^= 1 << (flip % 8)
    damaged = bytes(packed[: cut % (len(packed) + 1)]) + tail
    try:
        out = decompress(damaged, "gzip", limit=1000)
    except SourceError:
        return
    assert len(out) <= 1000


# --- verification --------------------------------------------------------------------------------------


def test_one_verify_serves_contents_and_config_references() -> None:
    import hashlib

    upper = "sha256-" + hashlib.sha256(b"x").hexdigest().upper()
    verify(b"x", upper)  # file contents: digests compared as bytes (hex.DecodeString)
    with pytest.raises(SourceError, match="hash verification failed"):
        verify(b"x", upper, hash_as_hex=True)  # config references: as lower-case hex text (AssertValid)


# --- the boot's fetch budget ---------------------------------------------------------------------------


class FakeTime:
    """A clock that only moves when the fetcher sleeps between attempts (connects are instant)."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_two_dead_urls_share_one_deadline() -> None:
    fake = FakeTime()
    budget = Budget(deadline=1.0, clock=fake.clock)
    opts = FetchOptions(
        budget=budget, sleep=fake.sleep, initial_backoff=0.125, max_backoff=0.125, total_timeout=0.0
    )
    dead = [f"http://127.0.0.1:{closed_port()}/a", f"http://127.0.0.1:{closed_port()}/b"]
    with pytest.raises(SourceError, match=r"last error: dial 127\.0\.0\.1"):
        fetch_url(dead[0], options=opts)
    first = budget.attempts
    assert first == 8  # t = 0, 0.125, ... 0.875; then what is left is no more than the next back-off
    with pytest.raises(SourceError, match="the boot's 1 s for fetching all resources is spent"):
        fetch_url(dead[1], options=opts)
    # Per resource (the old behaviour) the second URL would have had 8 attempts of its own.
    assert budget.attempts - first <= 1
    assert budget.fetches == 2 and budget.elapsed() <= 1.0


def test_a_spent_budget_makes_no_request(server: LocalServer) -> None:
    fake = FakeTime()
    budget = Budget(deadline=0.5, clock=fake.clock)
    fake.now = 0.0
    budget.spent = 0.5
    server.routes["/x"] = lambda r: Reply(200, b"x")
    with pytest.raises(SourceError, match="for fetching all resources is spent"):
        fetch_url(server.url("/x"), options=FetchOptions(budget=budget))
    assert server.hits("/x") == [] and budget.attempts == 0


def test_budget_is_shared_by_derived_options() -> None:
    budget = Budget()
    assert replace(FetchOptions(budget=budget), total_timeout=3.0).budget is budget


def test_redirect_loop_fails_at_the_limit_without_retrying(server: LocalServer) -> None:
    server.routes["/loop"] = lambda r: Reply(302, b"", {"Location": "/loop"})
    budget = Budget()
    opts = FetchOptions(budget=budget, initial_backoff=0.01, total_timeout=0.0)
    with pytest.raises(SourceError, match="stopped after 10 redirects"):
        fetch_url(server.url("/loop"), options=opts)
    # Go's http.Client: the first request and 10 redirects, then an error (no retry loop around it).
    assert len(server.hits("/loop")) == 11 and budget.attempts == 11


def test_redirect_within_the_limit_is_followed(server: LocalServer) -> None:
    for hop in range(10):
        server.routes[f"/r{hop}"] = lambda r, hop=hop: Reply(302, b"", {"Location": f"/r{hop + 1}"})
    server.routes["/r10"] = lambda r: Reply(200, b"there")
    assert fetch_url(server.url("/r0"), options=FetchOptions(total_timeout=5.0)) == b"there"


# --- merge/replace fan-out -----------------------------------------------------------------------------


def _fan_out_config(level: int, fan: int = 10) -> model.Config:
    config = model.Config()
    config.ignition.version = "3.6.0"
    if level < 3:
        config.ignition.config.merge = [
            model.Resource(source=f"http://refs.invalid/L{level + 1}-{i}") for i in range(fan)
        ]
    return config


def test_fan_out_beyond_the_reference_budget_is_a_clear_error() -> None:
    fetched: list[str] = []

    def fetcher(resource: model.Resource, _options: FetchOptions) -> bytes:
        fetched.append(resource.source or "")
        return resource.source.encode() if resource.source else b""

    def parser(data: bytes) -> model.Config:
        return _fan_out_config(int(data.decode().rpartition("/L")[2].split("-")[0]))

    with pytest.raises(SourceError, match=f"more than {DEFAULT_MAX_REFERENCES} config references in total"):
        resolve(_fan_out_config(0), fetcher=fetcher, parser=parser)
    assert len(fetched) == DEFAULT_MAX_REFERENCES == 100  # not the 1 110 a depth-3 fan-out of 10 asks for
    out = resolve(_fan_out_config(1), fetcher=fetcher, parser=parser, max_references=110)
    assert out.ignition.version == "3.6.0"


def test_resolve_and_its_references_spend_the_given_budget() -> None:
    dead = f"http://127.0.0.1:{closed_port()}/child.ign"
    config = model.Config()
    config.ignition.version = "3.6.0"
    config.ignition.config.merge = [model.Resource(source=dead)]
    budget = Budget(deadline=0.2)
    with pytest.raises(SourceError, match="in time"):
        resolve(config, budget=budget, options=FetchOptions(initial_backoff=0.05))
    assert budget.fetches == 1 and budget.attempts >= 1
