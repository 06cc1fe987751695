"""ignition.config.merge / replace followed through a real local HTTP server and data URLs."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from ignition_http import LocalServer, Reply, serve

from fpvm.ignition import parse
from fpvm.ignition.dataurl import encode
from fpvm.ignition.errors import IgnitionError, Report
from fpvm.ignition.http import FetchOptions
from fpvm.ignition.model import Config
from fpvm.ignition.resolve import resolve
from fpvm.ignition.resources import Budget
from fpvm.ignition.srcerrors import SourceError

FAST = FetchOptions(initial_backoff=0.01, max_backoff=0.05, total_timeout=5.0)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    yield from serve()


def doc(version: str = "3.6.0", **sections: Any) -> dict[str, Any]:
    ignition = sections.pop("ignition", {})
    return {"ignition": {"version": version, **ignition}, **sections}


def raw(d: dict[str, Any]) -> bytes:
    return json.dumps(d).encode()


def host(server: LocalServer, path: str, d: dict[str, Any]) -> str:
    body = raw(d)
    server.routes[path] = lambda r: Reply(200, body)
    return server.url(path)


def users(*names: str, shell: str | None = None) -> dict[str, Any]:
    return {"users": [{"name": n, **({"shell": shell} if shell else {})} for n in names]}


def merged(*sources: str | dict[str, Any]) -> dict[str, Any]:
    return {"config": {"merge": [s if isinstance(s, dict) else {"source": s} for s in sources]}}


def run(d: dict[str, Any], **kwargs: Any) -> Config:
    kwargs.setdefault("options", FAST)
    return resolve(parse(raw(d)), **kwargs)


def test_merges_in_order_child_values_win(server: LocalServer) -> None:
    a = encode(raw(doc(passwd=users("alice", shell="/bin/sh"))))
    b = host(server, "/b.ign", doc(passwd=users("alice", "bob", shell="/bin/csh")))
    out = run(doc(ignition=merged(a, b), passwd=users("root")))
    assert [(u.name, u.shell) for u in out.passwd.users] == [
        ("root", None),
        ("alice", "/bin/csh"),
        ("bob", "/bin/csh"),
    ]


def test_replace_wins_over_merge(server: LocalServer) -> None:
    never = server.url("/never.ign")
    replacement = host(server, "/replacement.ign", doc(passwd=users("replaced")))
    out = run(
        doc(
            ignition={"config": {"replace": {"source": replacement}, "merge": [{"source": never}]}},
            passwd=users("original"),
        )
    )
    assert [u.name for u in out.passwd.users] == ["replaced"]
    assert server.hits("/never.ign") == []


def test_replacing_config_is_rendered_too(server: LocalServer) -> None:
    leaf = host(server, "/leaf.ign", doc(passwd=users("leaf")))
    middle = host(server, "/middle.ign", doc(ignition=merged(leaf), passwd=users("middle")))
    out = run(doc(ignition={"config": {"replace": {"source": middle}}}))
    assert [u.name for u in out.passwd.users] == ["middle", "leaf"]


def test_depth_first(server: LocalServer) -> None:
    c = host(server, "/c.ign", doc(passwd=users("x", shell="/from/c")))
    a = host(server, "/a.ign", doc(ignition=merged(c), passwd=users("a")))
    b = host(server, "/b.ign", doc(passwd=users("x", shell="/from/b")))
    out = run(doc(ignition=merged(a, b)))
    assert [(u.name, u.shell) for u in out.passwd.users] == [("a", None), ("x", "/from/b")]
    order = [r.path for r in server.requests]
    assert order == ["/a.ign", "/c.ign", "/b.ign"]


def test_referenced_configs_may_use_older_versions(server: LocalServer) -> None:
    old = host(server, "/old.ign", doc("3.0.0", passwd=users("old")))
    out = run(doc(ignition=merged(old)))
    assert [u.name for u in out.passwd.users] == ["old"]


def test_unsupported_version_is_rejected_with_the_chain(server: LocalServer) -> None:
    v2 = host(server, "/v2.ign", {"ignition": {"version": "2.2.0"}})
    with pytest.raises(IgnitionError) as info:
        run(doc(ignition=merged(v2)))
    entry = info.value.report.errors[0]
    assert entry.path == "$.ignition.config.merge[0]"
    assert v2 in entry.message and "unsupported config version" in entry.message


def test_invalid_referenced_config_names_its_own_path(server: LocalServer) -> None:
    bad = host(server, "/bad.ign", doc(storage={"files": [{"path": "relative"}]}))
    with pytest.raises(IgnitionError) as info:
        run(doc(ignition=merged(bad)))
    message = info.value.report.errors[0].message
    assert "$.storage.files[0].path" in message and bad in message


def test_verification_of_fetched_configs(server: LocalServer) -> None:
    body = raw(doc(passwd=users("verified")))
    server.routes["/v.ign"] = lambda r: Reply(200, body)
    good = {
        "source": server.url("/v.ign"),
        "verification": {"hash": "sha512-" + hashlib.sha512(body).hexdigest()},
    }
    assert [u.name for u in run(doc(ignition=merged(good))).passwd.users] == ["verified"]
    wrong = {"source": server.url("/v.ign"), "verification": {"hash": "sha256-" + "0" * 64}}
    with pytest.raises(SourceError) as info:
        run(doc(ignition=merged(wrong)))
    assert info.value.path == "$.ignition.config.merge[0]"
    assert "hash verification failed" in info.value.message


def test_config_hash_is_compared_as_lowercase_hex_like_upstream(server: LocalServer) -> None:
    body = raw(doc())
    server.routes["/u.ign"] = lambda r: Reply(200, body)
    upper = {
        "source": server.url("/u.ign"),
        "verification": {"hash": "sha256-" + hashlib.sha256(body).hexdigest().upper()},
    }
    with pytest.raises(SourceError, match="hash verification failed"):
        run(doc(ignition=merged(upper)))


def test_gzip_and_headers_for_referenced_configs(server: LocalServer) -> None:
    body = raw(doc(passwd=users("zipped")))
    server.routes["/z.ign"] = lambda r: Reply(200, gzip.compress(body))
    ref = {
        "source": server.url("/z.ign"),
        "compression": "gzip",
        "httpHeaders": [{"name": "Authorization", "value": "Bearer t0ken"}],
        "verification": {"hash": "sha512-" + hashlib.sha512(body).hexdigest()},
    }
    assert [u.name for u in run(doc(ignition=merged(ref))).passwd.users] == ["zipped"]
    assert server.hits("/z.ign")[0].headers["authorization"] == "Bearer t0ken"


def test_cycle_is_reported_with_its_chain(server: LocalServer) -> None:
    a, b = server.url("/a.ign"), server.url("/b.ign")
    host(server, "/a.ign", doc(ignition=merged(b)))
    host(server, "/b.ign", doc(ignition=merged(a)))
    with pytest.raises(SourceError) as info:
        run(doc(ignition=merged(a)))
    assert info.value.message == f"config reference cycle: <config> -> {a} -> {b} -> {a}"


def test_depth_limit(server: LocalServer) -> None:
    for i in range(6):
        host(server, f"/d{i}.ign", doc(ignition=merged(server.url(f"/d{i + 1}.ign"))))
    host(server, "/d6.ign", doc(passwd=users("deep")))
    with pytest.raises(SourceError, match=r"nested deeper than 3: <config> -> .*/d0.ign -> .*/d3.ign$"):
        run(doc(ignition=merged(server.url("/d0.ign"))), max_depth=3)
    out = run(doc(ignition=merged(server.url("/d0.ign"))), max_depth=7)
    assert [u.name for u in out.passwd.users] == ["deep"]


def test_fetch_failure_names_reference_and_chain(server: LocalServer) -> None:
    gone = server.url("/gone.ign")
    with pytest.raises(SourceError) as info:
        run(doc(ignition=merged(gone)))
    assert info.value.path == "$.ignition.config.merge[0]"
    assert (
        info.value.message
        == f"resource not found: GET {gone} returned HTTP 404 (fetching <config> -> {gone})"
    )


def test_data_url_sources_are_not_echoed_in_messages() -> None:
    secret = encode(raw(doc(ignition=merged("http://127.0.0.1:9/"), passwd={"users": [{"name": "s3cret"}]})))
    with pytest.raises(SourceError) as info:
        run(doc(ignition=merged(secret)), options=replace(FAST, budget=Budget(0.3)))
    assert "s3cret" not in str(info.value) and "data URL (sha512 " in str(info.value)


def test_warnings_of_referenced_configs_are_collected() -> None:
    child = encode(raw({**doc(), "unknownKey": 1}))
    report = Report()
    run(doc(ignition=merged(child)), report=report)
    assert report.warnings and all(w.path == "$.ignition.config.merge[0]" for w in report.warnings)


def test_custom_fetcher_and_parser() -> None:
    seen: list[str] = []

    def fetcher(resource: Any, options: FetchOptions) -> bytes:
        seen.append(resource.source)
        return raw(doc(passwd=users(resource.source.rsplit("/", 1)[1])))

    out = run(doc(ignition=merged("http://x/one", "http://x/two")), fetcher=fetcher)
    assert seen == ["http://x/one", "http://x/two"]
    assert [u.name for u in out.passwd.users] == ["one", "two"]


def test_timeouts_of_the_config_govern_its_references(server: LocalServer) -> None:
    server.routes["/down.ign"] = lambda r: Reply(503, b"")
    ref = merged(server.url("/down.ign"))
    with pytest.raises(SourceError, match="unable to fetch resource in time"):
        run(doc(ignition={**ref, "timeouts": {"httpTotal": 1}}), options=replace(FAST, total_timeout=0.0))


def test_timeouts_of_a_merged_config_apply_before_it_is_rendered(server: LocalServer) -> None:
    server.routes["/down.ign"] = lambda r: Reply(500, b"")
    child = encode(raw(doc(ignition={**merged(server.url("/down.ign")), "timeouts": {"httpTotal": 1}})))
    with pytest.raises(SourceError, match="unable to fetch resource in time"):
        run(doc(ignition=merged(child)), options=replace(FAST, total_timeout=0.0))


def test_certificate_authorities_of_the_config_are_trusted(tmp_path: Any) -> None:
    import ssl

    from ignition_http import self_signed_cert

    cert, key = self_signed_cert(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    for tls in serve(context):
        target = host(tls, "/tls.ign", doc(passwd=users("over-tls")))
        ca = {"certificateAuthorities": [{"source": encode(cert.read_bytes())}]}
        out = run(doc(ignition={**merged(target), "security": {"tls": ca}}))
        assert [u.name for u in out.passwd.users] == ["over-tls"]


def test_certificate_authorities_are_fetched_once(server: LocalServer, tmp_path: Any) -> None:
    from ignition_http import self_signed_cert

    cert, _key = self_signed_cert(tmp_path)
    pem = cert.read_bytes()
    server.routes["/ca.pem"] = lambda r: Reply(200, pem)
    ca = {"certificateAuthorities": [{"source": server.url("/ca.pem")}]}
    children = [encode(raw(doc(passwd=users(n)))) for n in ("one", "two", "three")]
    out = run(doc(ignition={**merged(*children), "security": {"tls": ca}}))
    assert [u.name for u in out.passwd.users] == ["one", "two", "three"]
    assert len(server.hits("/ca.pem")) == 1
