"""Real podman configs parse into the model; translation and the model's shape behave as upstream's."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest

from fpvm.ignition import Config, IgnitionError, check, model, parse, parse_with_report
from fpvm_support import podman_ignition_configs


@pytest.mark.parametrize("path", podman_ignition_configs(), ids=lambda p: p.name)
def test_every_podman_config_is_valid(path: Path, fixtures_dir: Path) -> None:
    report = check(path.read_bytes())
    assert report.valid, report.entries
    assert report.version == "3.2.0"  # what podman's GenerateIgnitionConfig emits


@pytest.mark.parametrize("path", podman_ignition_configs(), ids=lambda p: p.name)
def test_podman_config_model_matches_the_document(path: Path, fixtures_dir: Path) -> None:
    doc = json.loads(path.read_bytes())
    cfg = parse(path.read_bytes())
    assert cfg.ignition.version == "3.6.0"
    assert [u.name for u in cfg.passwd.users] == [u["name"] for u in doc["passwd"]["users"]]
    assert [f.path for f in cfg.storage.files] == [f["path"] for f in doc["storage"]["files"]]
    assert [d.path for d in cfg.storage.directories] == [
        d["path"] for d in doc["storage"].get("directories", [])
    ]
    assert [(lk.path, lk.target) for lk in cfg.storage.links] == [
        (lk["path"], lk["target"]) for lk in doc["storage"].get("links", [])
    ]
    assert [u.name for u in cfg.systemd.units] == [u["name"] for u in doc["systemd"]["units"]]
    keys = {u.name: u.ssh_authorized_keys for u in cfg.passwd.users}
    assert keys == {u["name"]: u.get("sshAuthorizedKeys", []) for u in doc["passwd"]["users"]}


def test_capture_details(fixtures_dir: Path) -> None:
    cfg = parse((fixtures_dir / "podman-4.3.1-qemu-capture" / "machine.ign").read_bytes())
    by_path = {f.path: f for f in cfg.storage.files}
    delegate = by_path["/etc/systemd/system/user@.service.d/delegate.conf"]
    assert delegate.mode == 0o644
    assert delegate.contents.source is not None and delegate.contents.source.startswith("data:,")
    assert delegate.user.name == "root" and delegate.user.id is None
    socket = next(u for u in cfg.systemd.units if u.name == "podman.socket")
    assert socket.enabled is True and socket.contents is None


def test_absent_sections_are_empty_objects() -> None:
    cfg = parse(b'{"ignition":{"version":"3.0.0"}}')
    assert cfg == Config(ignition=model.Ignition(version="3.6.0"))
    assert cfg.storage.files == [] and cfg.ignition.proxy.no_proxy == []
    assert cfg.ignition.config.replace.source is None and cfg.kernel_arguments.should_exist == []


def test_every_field_has_a_json_key_and_version() -> None:
    seen = set()
    todo: list[type] = [model.Config]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for f in dataclasses.fields(cls):
            assert f.metadata["json"][0].islower() and "_" not in f.metadata["json"]
            assert (3, 0) <= f.metadata["since"] <= model.NEWEST
            default = getattr(cls(), f.name)
            if dataclasses.is_dataclass(default):
                todo.append(type(default))
            elif isinstance(default, list):
                assert default == []
                item = typing.get_args(typing.get_type_hints(cls)[f.name])[0]
                if dataclasses.is_dataclass(item):
                    todo.append(item)
    assert {c.__name__ for c in seen} >= {
        "Luks",
        "Clevis",
        "Tang",
        "Cex",
        "Raid",
        "Partition",
        "KernelArguments",
    }


def test_older_specs_translate_special_bits_away() -> None:
    # Upstream masks setuid/setgid/sticky when translating 3.5 and older (they were never applied).
    doc = {
        "ignition": {"version": "3.5.0"},
        "storage": {
            "files": [{"path": "/a", "mode": 0o4755}],
            "directories": [{"path": "/d", "mode": 0o1777}],
        },
    }
    cfg, report = parse_with_report(json.dumps(doc).encode())
    assert cfg.storage.files[0].mode == 0o755 and cfg.storage.directories[0].mode == 0o777
    assert len(report.warnings) == 2
    doc["ignition"]["version"] = "3.6.0"
    cfg = parse(json.dumps(doc).encode())
    assert cfg.storage.files[0].mode == 0o4755 and cfg.storage.directories[0].mode == 0o1777


def test_plain_string_fields_of_old_specs_become_empty_strings() -> None:
    doc = {"ignition": {"version": "3.2.0"}, "storage": {"links": [{"path": "/a"}]}}
    assert parse(json.dumps(doc).encode()).storage.links[0].target == ""
    doc["ignition"]["version"] = "3.3.0"
    doc["storage"]["links"][0]["target"] = "/b"
    assert parse(json.dumps(doc).encode()).storage.links[0].target == "/b"


def test_keys_unknown_to_the_version_are_dropped_with_a_warning() -> None:
    doc = {
        "ignition": {"version": "3.0.0", "proxy": {"httpProxy": "http://p"}},
        "passwd": {"users": [{"name": "core", "shouldExist": False}]},
    }
    cfg, report = parse_with_report(json.dumps(doc).encode())
    assert cfg.ignition.proxy.http_proxy is None and cfg.passwd.users[0].should_exist is None
    assert {(w.path, w.message) for w in report.warnings} == {
        ("$.ignition.proxy", "unused key proxy"),
        ("$.passwd.users[0].shouldExist", "unused key shouldExist"),
    }


def test_go_decoder_semantics_case_and_repeats() -> None:
    # Go's decoder matches keys case-insensitively and applies repeated keys into the same value.
    data = b'{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"/a"}],"FILES":[{"mode":420}]}}'
    cfg, report = parse_with_report(data)
    assert [(f.path, f.mode) for f in cfg.storage.files] == [("/a", 420)]
    assert ("$.storage.FILES", "unused key FILES") in {(w.path, w.message) for w in report.warnings}


def test_ignition_error_carries_the_report() -> None:
    with pytest.raises(IgnitionError) as exc:
        parse(b'{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"a"},{"path":"b"}]}}')
    assert [e.path for e in exc.value.report.errors] == ["$.storage.files[0].path", "$.storage.files[1].path"]
    assert str(exc.value) == "$.storage.files[0].path: path not absolute (and 1 more error)"


def test_experimental_spec_is_accepted_like_upstream() -> None:
    cfg = parse(b'{"ignition":{"version":"3.7.0-experimental"}}')
    assert cfg.ignition.version == "3.7.0-experimental"
    with pytest.raises(IgnitionError, match="unsupported config version"):
        parse(b'{"ignition":{"version":"3.6.0-experimental"}}')
