"""Bad input never escapes as anything but IgnitionError, and check() never raises.

Arbitrary JSON (shaped like a config or not), arbitrary bytes, and mutations of podman's real configs.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpvm.ignition import IgnitionError, check, parse
from fpvm.ignition.parse import INTERNAL
from fpvm_support import podman_ignition_configs

VERSIONS = ["3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0", "3.7.0-experimental", "x", ""]
KEYS = [
    "ignition", "version", "storage", "files", "directories", "links", "path", "mode", "contents", "source",
    "verification", "hash", "compression", "httpHeaders", "name", "value", "user", "group", "id", "target",
    "hard", "overwrite", "append", "systemd", "units", "dropins", "enabled", "mask", "passwd", "users",
    "groups", "sshAuthorizedKeys", "disks", "device", "partitions", "number", "label", "raid", "level",
    "filesystems", "format", "luks", "clevis", "custom", "tang", "url", "kernelArguments", "shouldExist",
    "proxy", "httpProxy", "config", "merge", "replace", "security", "tls", "certificateAuthorities", "PATH",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["/a", "//a", "data:,x", "http://x", "[Unit]\nA=b", "sha512-x", "gzip", "a.service"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=5),
    ),
    max_leaves=40,
)


def _exercise(data: bytes) -> None:
    report = check(data)
    assert all(e.kind in ("error", "warning") and e.path.startswith("$") for e in report.entries)
    assert not any(e.message.startswith(INTERNAL) for e in report.entries), report.entries
    try:
        cfg = parse(data)
    except IgnitionError as exc:
        assert not report.valid and exc.report.errors
    else:
        assert report.valid and cfg.ignition.version


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    _exercise(json.dumps(value).encode())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VERSIONS), st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4))
def test_config_shaped_json(version: str, body: dict[str, Any]) -> None:
    body["ignition"] = {
        "version": version,
        **(body.get("ignition") if isinstance(body.get("ignition"), dict) else {}),
    }
    _exercise(json.dumps(body).encode())


@settings(max_examples=120, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    _exercise(data)


FIXTURES = [p.read_bytes() for p in podman_ignition_configs() if p.exists()]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_podman_configs(data: st.DataObject) -> None:
    if not FIXTURES:
        return
    raw = bytearray(data.draw(st.sampled_from(FIXTURES)))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        choice = data.draw(st.integers(min_value=0, max_value=2))
        if choice == 0:
            raw[at] = data.draw(st.integers(min_value=0, max_value=255))
        elif choice == 1:
            del raw[at]
        else:
            raw[at:at] = data.draw(st.sampled_from([b"{", b"[", b'"', b"null", b",", b"\\u0000", b"1e9"]))
    _exercise(bytes(raw))


def test_deep_nesting_is_reported_not_crashing() -> None:
    # Go's decoder allows 10000 levels; deeper is "exceeded max depth".
    for depth, valid in ((9999, True), (10001, False)):
        data = b'{"ignition":{"version":"3.2.0"},"x":' + b"[" * depth + b"]" * depth + b"}"
        report = check(data)
        assert report.valid is valid, report.entries
    assert check(b'{"x":' + b"[" * 10001 + b"]" * 10001 + b"}").errors[0].message == "exceeded max depth"


def test_large_config_is_fine() -> None:
    files = [{"path": f"/f{i}", "contents": {"source": "data:," + "x" * 1000}} for i in range(2000)]
    data = json.dumps({"ignition": {"version": "3.2.0"}, "storage": {"files": files}}).encode()
    assert check(data).valid
