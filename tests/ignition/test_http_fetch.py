"""http(s) sources against a real server on 127.0.0.1: upstream's retry, timeouts, headers, redirects.

Back-off and timeouts are shortened through FetchOptions so the file runs in a few seconds; the
defaults themselves are asserted to be upstream's (internal/resource/http.go).
"""

from __future__ import annotations

import gzip
import hashlib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from ignition_http import LocalServer, Reply, Request, self_signed_cert, serve

from fpvm.ignition import http as httpfetch
from fpvm.ignition import model
from fpvm.ignition.dataurl import encode
from fpvm.ignition.http import FetchOptions, ProxySettings, proxy_for
from fpvm.ignition.resources import Budget, fetch, fetch_url
from fpvm.ignition.sources import options_from_config
from fpvm.ignition.srcerrors import SourceError

FAST = FetchOptions(initial_backoff=0.01, max_backoff=0.05, total_timeout=5.0)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    yield from serve()


def failing_then(status: int, times: int, body: bytes) -> object:
    count = {"n": 0}

    def route(_request: Request) -> Reply:
        count["n"] += 1
        return Reply(status, b"oops") if count["n"] <= times else Reply(200, body)

    return route


def test_defaults_are_upstreams() -> None:
    opts = FetchOptions()
    assert (httpfetch.INITIAL_BACKOFF, httpfetch.MAX_BACKOFF) == (0.2, 5.0)
    assert opts.response_header_timeout == 10.0 and opts.total_timeout == 0.0
    assert opts.max_redirects == 10


def test_plain_get(server: LocalServer) -> None:
    server.routes["/a"] = lambda r: Reply(200, b"hello")
    assert fetch_url(server.url("/a"), options=FAST) == b"hello"


def test_retries_after_server_errors(server: LocalServer) -> None:
    server.routes["/flaky"] = failing_then(500, 3, b"finally")  # type: ignore[assignment]
    assert fetch_url(server.url("/flaky"), options=FAST) == b"finally"
    assert len(server.hits("/flaky")) == 4


def test_backoff_doubles_and_is_capped(server: LocalServer) -> None:
    server.routes["/flaky"] = failing_then(503, 5, b"ok")  # type: ignore[assignment]
    waits: list[float] = []
    opts = replace(FAST, initial_backoff=0.2, max_backoff=0.5, sleep=waits.append)
    assert fetch_url(server.url("/flaky"), options=opts) == b"ok"
    assert waits == [0.2, 0.4, 0.5, 0.5, 0.5]


def test_404_is_not_retried(server: LocalServer) -> None:
    server.routes["/missing"] = lambda r: Reply(404, b"")
    with pytest.raises(SourceError, match="resource not found"):
        fetch_url(server.url("/missing"), options=FAST)
    assert len(server.hits("/missing")) == 1


def test_other_client_errors_are_not_retried(server: LocalServer) -> None:
    server.routes["/forbidden"] = lambda r: Reply(403, b"")
    with pytest.raises(SourceError, match=r"failed to fetch resource.*HTTP 403"):
        fetch_url(server.url("/forbidden"), options=FAST)
    assert len(server.hits("/forbidden")) == 1


def test_retry_codes_extend_the_retried_set(server: LocalServer) -> None:
    server.routes["/busy"] = failing_then(429, 1, b"ok")  # type: ignore[assignment]
    assert fetch_url(server.url("/busy"), options=replace(FAST, retry_codes=(429,))) == b"ok"


def test_204_is_empty_success(server: LocalServer) -> None:
    server.routes["/empty"] = lambda r: Reply(204)
    assert fetch_url(server.url("/empty"), options=FAST) == b""


def test_total_deadline_stops_endless_server_errors(server: LocalServer) -> None:
    server.routes["/down"] = lambda r: Reply(500, b"")
    opts = replace(FAST, total_timeout=1.0)
    with pytest.raises(SourceError, match=r"unable to fetch resource in time.*attempts; last error"):
        fetch_url(server.url("/down"), options=opts)
    assert len(server.hits("/down")) >= 2


def test_fpvm_deadline_applies_when_http_total_is_zero(server: LocalServer) -> None:
    server.routes["/down"] = lambda r: Reply(502, b"")
    opts = replace(FAST, total_timeout=0.0, budget=Budget(0.3))
    with pytest.raises(SourceError, match="unable to fetch resource in time"):
        fetch_url(server.url("/down"), options=opts)


def test_stalled_server_fails_on_the_header_timeout(server: LocalServer) -> None:
    """Upstream retries a header timeout until httpTotal (default: never); fpvm gives up at once."""
    server.routes["/slow"] = lambda r: Reply(200, b"late", delay_headers=1.0)
    budget = Budget()
    opts = replace(FAST, total_timeout=0.0, response_header_timeout=0.2, budget=budget)
    with pytest.raises(SourceError, match=r"awaiting response headers \(httpResponseHeaders: 0.2 s\)"):
        fetch_url(server.url("/slow"), options=opts)
    assert len(server.hits("/slow")) == 1 and budget.attempts == 1


def test_total_timeout_covers_the_body(server: LocalServer) -> None:
    server.routes["/trickle"] = lambda r: Reply(200, b"x" * 50, trickle=0.05)
    opts = replace(FAST, total_timeout=0.5)
    with pytest.raises(SourceError, match=r"unable to fetch resource in time.*reading body"):
        fetch_url(server.url("/trickle"), options=opts)


def test_connection_refused_is_retried_until_the_deadline() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = replace(FAST, total_timeout=0.3)
    with pytest.raises(SourceError, match=r"in time.*attempts.*last error: dial 127.0.0.1"):
        fetch_url(f"http://127.0.0.1:{port}/x", options=opts)


def test_gzip_and_hash_over_decompressed_bytes(server: LocalServer) -> None:
    content = b"config contents\n" * 100
    server.routes["/gz"] = lambda r: Reply(200, gzip.compress(content))
    good = "sha512-" + hashlib.sha512(content).hexdigest()
    got = fetch_url(server.url("/gz"), compression="gzip", verification=good, options=FAST)
    assert got == content
    compressed_hash = "sha256-" + hashlib.sha256(gzip.compress(content)).hexdigest()
    with pytest.raises(SourceError, match="hash verification failed"):
        fetch_url(server.url("/gz"), compression="gzip", verification=compressed_hash, options=FAST)


def test_hash_mismatch_names_both_sums(server: LocalServer) -> None:
    server.routes["/f"] = lambda r: Reply(200, b"tampered")
    expected = hashlib.sha256(b"original").hexdigest()
    with pytest.raises(SourceError) as info:
        fetch_url(server.url("/f"), verification=f"sha256-{expected}", options=FAST)
    calculated = hashlib.sha256(b"tampered").hexdigest()
    assert info.value.message == f"hash verification failed (calculated {calculated} but expected {expected})"


def test_custom_headers_reach_the_server_and_replace_defaults(server: LocalServer) -> None:
    server.routes["/h"] = lambda r: Reply(200, b"ok")
    resource = model.Resource(
        source=server.url("/h"),
        http_headers=[
            model.HTTPHeader("X-Token", "first"),
            model.HTTPHeader("x-token", "second"),
            model.HTTPHeader("Accept", "text/plain"),
        ],
    )
    assert fetch(resource, FAST) == b"ok"
    (request,) = server.hits("/h")
    assert request.headers["x-token"] == "second"
    assert request.headers["accept"] == "text/plain"
    assert request.headers["user-agent"].startswith("Ignition/")
    assert request.headers["accept-encoding"] == "identity"


def test_default_accept_header(server: LocalServer) -> None:
    server.routes["/h"] = lambda r: Reply(200, b"ok")
    fetch_url(server.url("/h"), options=FAST)
    assert server.hits("/h")[0].headers["accept"] == httpfetch.ACCEPT


def test_header_without_value_is_an_error(server: LocalServer) -> None:
    resource = model.Resource(source=server.url("/h"), http_headers=[model.HTTPHeader("X-A", None)])
    with pytest.raises(SourceError, match="unable to parse HTTP header"):
        fetch(resource, FAST)
    assert server.requests == []


def test_redirect_followed_without_our_headers(server: LocalServer) -> None:
    server.routes["/start"] = lambda r: Reply(302, b"", {"Location": "/target"})
    server.routes["/target"] = lambda r: Reply(200, b"arrived")
    resource = model.Resource(source=server.url("/start"), http_headers=[model.HTTPHeader("X-Secret", "s")])
    assert fetch(resource, FAST) == b"arrived"
    assert server.hits("/start")[0].headers["x-secret"] == "s"
    assert "x-secret" not in server.hits("/target")[0].headers


def test_redirect_loop_gives_up(server: LocalServer) -> None:
    server.routes["/loop"] = lambda r: Reply(307, b"", {"Location": "/loop"})
    opts = replace(FAST, total_timeout=1.0)
    with pytest.raises(SourceError, match="stopped after 10 redirects"):
        fetch_url(server.url("/loop"), options=opts)


def test_size_limit(server: LocalServer) -> None:
    server.routes["/big"] = lambda r: Reply(200, b"y" * 1000)
    with pytest.raises(SourceError, match="larger than the limit of 100 bytes"):
        fetch_url(server.url("/big"), options=replace(FAST, max_bytes=100))


def test_size_limit_applies_to_decompressed_bytes(server: LocalServer) -> None:
    server.routes["/bomb"] = lambda r: Reply(200, gzip.compress(b"\0" * 100_000))
    with pytest.raises(SourceError, match="decompressed resource is larger"):
        fetch_url(server.url("/bomb"), compression="gzip", options=replace(FAST, max_bytes=10_000))


def test_plain_http_proxy_gets_the_absolute_url(server: LocalServer) -> None:
    server.routes["proxy"] = lambda r: Reply(200, b"via proxy")
    opts = replace(FAST, proxy=ProxySettings(http_proxy=f"127.0.0.1:{server.port}"))
    assert fetch_url("http://ignition.invalid/config.ign", options=opts) == b"via proxy"
    assert server.requests[0].path == "http://ignition.invalid/config.ign"


def test_proxy_from_config_with_credentials(server: LocalServer) -> None:
    server.routes["proxy"] = lambda r: Reply(200, b"ok")
    config = model.Config()
    config.ignition.proxy = model.Proxy(http_proxy=f"http://user:pw@127.0.0.1:{server.port}")
    opts = replace(options_from_config(config, FAST), initial_backoff=0.01)
    assert fetch_url("http://example.invalid/x", options=opts) == b"ok"
    assert server.requests[0].headers["proxy-authorization"] == "Basic dXNlcjpwdw=="


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "proxied"),
    [
        ("example.com", 80, [], True),
        ("localhost", 80, [], False),
        ("127.0.0.1", 80, [], False),
        ("::1", 80, [], False),
        ("example.com", 80, ["*"], False),
        ("example.com", 80, ["example.com"], False),
        ("sub.example.com", 80, ["example.com"], False),
        ("example.com", 80, [".example.com"], True),
        ("sub.example.com", 80, [".example.com"], False),
        ("sub.example.com", 80, ["*.example.com"], False),
        ("notexample.com", 80, ["example.com"], True),
        ("example.com", 8080, ["example.com:80"], True),
        ("example.com", 80, ["example.com:80"], False),
        ("10.1.2.3", 80, ["10.0.0.0/8"], False),
        ("11.1.2.3", 80, ["10.0.0.0/8"], True),
        ("192.168.1.1", 80, ["192.168.1.1"], False),
        ("192.168.1.1", 443, ["192.168.1.1:80"], True),
        ("example.com", 80, ["a.org, example.com"], False),
    ],
)
def test_no_proxy_rules(host: str, port: int, no_proxy: list[str], proxied: bool) -> None:
    settings = ProxySettings(http_proxy="proxy.local:3128", no_proxy=tuple(no_proxy))
    assert (proxy_for("http", host, port, settings) is not None) is proxied


def test_https_uses_only_the_https_proxy() -> None:
    settings = ProxySettings(http_proxy="http://p:1")
    assert proxy_for("https", "example.com", 443, settings) is None
    found = proxy_for("https", "example.com", 443, ProxySettings(https_proxy="http://p:2"))
    assert found is not None and found.port == 2


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(tls_files: tuple[Path, Path]) -> Iterator[LocalServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    yield from serve(context)


def test_https_needs_the_configured_ca(tls_server: LocalServer, tls_files: tuple[Path, Path]) -> None:
    tls_server.routes["/secure"] = lambda r: Reply(200, b"secret config")
    with pytest.raises(SourceError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch_url(tls_server.url("/secure"), options=replace(FAST, total_timeout=0.3))
    config = model.Config()
    ca_pem = tls_files[0].read_bytes()
    config.ignition.security.tls.certificate_authorities = [model.Resource(source=encode(ca_pem))]
    opts = replace(options_from_config(config, FAST), initial_backoff=0.01)
    assert opts.ssl_context is not None
    assert fetch_url(tls_server.url("/secure"), options=opts) == b"secret config"


def test_https_through_a_connect_proxy(
    tls_server: LocalServer, tls_files: tuple[Path, Path], server: LocalServer
) -> None:
    tls_server.routes["/secure"] = lambda r: Reply(200, b"tunnelled")
    config = model.Config()
    config.ignition.security.tls.certificate_authorities = [
        model.Resource(source=encode(tls_files[0].read_bytes()))
    ]
    config.ignition.proxy = model.Proxy(https_proxy=f"http://127.0.0.1:{server.port}")
    opts = options_from_config(config, FAST)
    url = f"https://tls.invalid:{tls_server.port}/secure"
    assert fetch_url(url, options=opts) == b"tunnelled"
    assert [(r.method, r.path) for r in server.requests] == [("CONNECT", f"tls.invalid:{tls_server.port}")]
    assert tls_server.hits("/secure")[0].headers["host"] == f"tls.invalid:{tls_server.port}"


def test_ca_that_is_not_pem_is_rejected() -> None:
    config = model.Config()
    config.ignition.security.tls.certificate_authorities = [model.Resource(source=encode(b"not a cert"))]
    with pytest.raises(SourceError) as info:
        options_from_config(config, FAST)
    assert info.value.path == "$.ignition.security.tls.certificateAuthorities[0]"
    assert "unable to decode PEM block" in info.value.message


def test_timeouts_from_config() -> None:
    config = model.Config()
    config.ignition.timeouts = model.Timeouts(http_response_headers=3, http_total=7)
    opts = options_from_config(config)
    assert (opts.response_header_timeout, opts.total_timeout) == (3.0, 7.0)
    assert options_from_config(model.Config()).response_header_timeout == 10.0
