"""One readable positive and negative case per validation rule, for every spec version it differs in.

The verdicts and messages below were checked against upstream's ignition-validate; the bulk record of
that comparison is test_upstream_cases.py. Here each rule is spelled out so a failure names the rule.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fpvm.ignition import check

ALL = ["3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0", "3.7.0-experimental"]
H512 = "sha512-" + "a" * 128
H256 = "sha256-" + "b" * 64


def since(version: str) -> list[str]:
    return ALL[ALL.index(version) :]


def before(version: str) -> list[str]:
    return ALL[: ALL.index(version)]


def config(version: str, **sections: Any) -> bytes:
    doc: dict[str, Any] = {"ignition": {"version": version}}
    for key, value in sections.items():
        if key == "ignition":
            doc["ignition"].update(value)
        else:
            doc[key] = value
    return json.dumps(doc).encode()


def files(*entries: Any) -> dict[str, Any]:
    return {"files": list(entries)}


# (rule, versions, sections, expected errors [(path, message)], expected warnings [(path, message)])
Case = tuple[str, list[str], dict[str, Any], list[tuple[str, str]], list[tuple[str, str]]]

CASES: list[Case] = [
    ("minimal config", ALL, {}, [], []),
    ("absolute path", ALL, {"storage": files({"path": "/etc/a"})}, [], []),
    (
        "relative path",
        ALL,
        {"storage": files({"path": "etc/a"})},
        [("$.storage.files[0].path", "path not absolute")],
        [],
    ),
    (
        "empty path",
        ALL,
        {"storage": files({"path": ""})},
        [("$.storage.files[0].path", "path not specified")],
        [],
    ),
    (
        "unclean path",
        ALL,
        {"storage": {"directories": [{"path": "/a/../b"}]}},
        [("$.storage.directories[0].path", "path is not fully simplified")],
        [],
    ),
    (
        "double slash is not clean",
        ALL,
        {"storage": {"links": [{"path": "//a", "target": "/b"}]}},
        [("$.storage.links[0].path", "path is not fully simplified")],
        [],
    ),
    (
        "mode 07777",
        ["3.6.0", "3.7.0-experimental"],
        {"storage": files({"path": "/a", "mode": 0o7777})},
        [],
        [],
    ),
    (
        "special bits warn before 3.6",
        before("3.6.0"),
        {"storage": files({"path": "/a", "mode": 0o4755})},
        [],
        [
            (
                "$.storage.files[0].mode",
                "setuid/setgid/sticky bits are not supported or functional in spec versions older than 3.6.0",
            )
        ],
    ),
    (
        "mode above 07777",
        ALL,
        {"storage": {"directories": [{"path": "/a", "mode": 0o10000}]}},
        [("$.storage.directories[0].mode", "illegal file mode")],
        [],
    ),
    (
        "negative mode",
        ALL,
        {"storage": files({"path": "/a", "mode": -1})},
        [("$.storage.files[0].mode", "illegal file mode")],
        [],
    ),
    (
        "file and directory share one namespace",
        ALL,
        {"storage": {"files": [{"path": "/a"}], "directories": [{"path": "/a"}]}},
        [("$.storage.files[0]", "duplicate entry defined")],
        [],
    ),
    (
        "link duplicates a directory",
        ALL,
        {"storage": {"directories": [{"path": "/a"}], "links": [{"path": "/a", "target": "/b"}]}},
        [("$.storage.links[0]", "duplicate entry defined")],
        [],
    ),
    (
        "file below a configured link",
        ALL,
        {"storage": {"files": [{"path": "/l/a"}], "links": [{"path": "/l", "target": "/x"}]}},
        [("$.storage.files[0]", "file path includes link in config")],
        [],
    ),
    ("unit extension", ALL, {"systemd": {"units": [{"name": "a.timer"}]}}, [], []),
    (
        "bad unit extension",
        ALL,
        {"systemd": {"units": [{"name": "a.conf"}]}},
        [("$.systemd.units[0].name", "invalid systemd unit extension")],
        [],
    ),
    (
        "dropin extension",
        ALL,
        {"systemd": {"units": [{"name": "a.service", "dropins": [{"name": "x"}]}]}},
        [("$.systemd.units[0].dropins[0].name", "invalid systemd drop-in extension")],
        [],
    ),
    (
        "file collides with a unit that has contents",
        ALL,
        {
            "systemd": {"units": [{"name": "a.service", "contents": "[Unit]\n"}]},
            "storage": files({"path": "/etc/systemd/system/a.service"}),
        },
        [("$.storage.files[0].path", "path conflicts with systemd unit or dropin")],
        [],
    ),
    (
        "a unit without contents does not collide",
        ALL,
        {
            "systemd": {"units": [{"name": "a.service"}]},
            "storage": files({"path": "/etc/systemd/system/a.service"}),
        },
        [],
        [],
    ),
    (
        "dropin path collides",
        ALL,
        {
            "systemd": {
                "units": [{"name": "a.service", "dropins": [{"name": "x.conf", "contents": "[Unit]\n"}]}]
            },
            "storage": {"directories": [{"path": "/etc/systemd/system/a.service.d/x.conf"}]},
        },
        [("$.storage.directories[0].path", "path conflicts with systemd unit or dropin")],
        [],
    ),
    (
        "unreadable unit",
        ALL,
        {"systemd": {"units": [{"name": "a.service", "contents": "[Unit"}]}},
        [("$.systemd.units[0].contents", "invalid unit content: unable to find end of section")],
        [],
    ),
    (
        "enabled unit without [Install]",
        ALL,
        {"systemd": {"units": [{"name": "a.service", "enabled": True, "contents": "[Unit]\nA=b\n"}]}},
        [],
        [
            (
                "$.systemd.units[0].contents",
                'unit "a.service" is enabled, but has no install section so enable does nothing',
            )
        ],
    ),
    (
        "overwrite without source",
        ALL,
        {"storage": files({"path": "/a", "overwrite": True})},
        [("$.storage.files[0].overwrite", "overwrite must be false if source is unspecified")],
        [],
    ),
    (
        "overwrite with source",
        ALL,
        {"storage": files({"path": "/a", "overwrite": True, "contents": {"source": ""}})},
        [],
        [],
    ),
    (
        "user id and name",
        ALL,
        {"storage": files({"path": "/a", "user": {"id": 0, "name": "root"}})},
        [("$.storage.files[0].user", "cannot set both id and name")],
        [],
    ),
    (
        "user id with empty name",
        ALL,
        {"storage": files({"path": "/a", "group": {"id": 0, "name": ""}})},
        [],
        [],
    ),
    (
        "sha512",
        ALL,
        {"storage": files({"path": "/a", "contents": {"source": "data:,x", "verification": {"hash": H512}}})},
        [],
        [],
    ),
    (
        "sha512 of the wrong length",
        ALL,
        {
            "storage": files(
                {"path": "/a", "contents": {"source": "data:,x", "verification": {"hash": H512[:-2]}}}
            )
        },
        [("$.storage.files[0].contents.verification.hash", "incorrect size for hash sum")],
        [],
    ),
    (
        "sha256 from 3.1",
        since("3.1.0"),
        {"storage": files({"path": "/a", "contents": {"source": "data:,x", "verification": {"hash": H256}}})},
        [],
        [],
    ),
    (
        "sha256 unknown in 3.0",
        ["3.0.0"],
        {"storage": files({"path": "/a", "contents": {"source": "data:,x", "verification": {"hash": H256}}})},
        [("$.storage.files[0].contents.verification.hash", "unrecognized hash function")],
        [],
    ),
    (
        "malformed hash",
        ALL,
        {
            "storage": files(
                {"path": "/a", "contents": {"source": "data:,x", "verification": {"hash": "sha512"}}}
            )
        },
        [("$.storage.files[0].contents.verification.hash", "malformed hash specifier")],
        [],
    ),
    (
        "hash without source",
        ALL,
        {"storage": files({"path": "/a", "contents": {"verification": {"hash": H512}}})},
        [
            (
                "$.storage.files[0].contents.verification.hash",
                "source must be specified if verification is specified",
            )
        ],
        [],
    ),
    (
        "tftp and s3 in 3.0",
        ALL,
        {"storage": files({"path": "/a", "contents": {"source": "s3://b/k"}})},
        [],
        [],
    ),
    (
        "gs from 3.2",
        since("3.2.0"),
        {"storage": files({"path": "/a", "contents": {"source": "gs://b/k"}})},
        [],
        [],
    ),
    (
        "gs before 3.2",
        before("3.2.0"),
        {"storage": files({"path": "/a", "contents": {"source": "gs://b/k"}})},
        [("$.storage.files[0].contents.source", "invalid url scheme")],
        [],
    ),
    (
        "arn from 3.4",
        since("3.4.0"),
        {"storage": files({"path": "/a", "contents": {"source": "arn:aws:s3:::bucket/key"}})},
        [],
        [],
    ),
    (
        "arn before 3.4",
        before("3.4.0"),
        {"storage": files({"path": "/a", "contents": {"source": "arn:aws:s3:::bucket/key"}})},
        [("$.storage.files[0].contents.source", "invalid url scheme")],
        [],
    ),
    (
        "file: is no scheme of Ignition",
        ALL,
        {"storage": files({"path": "/a", "contents": {"source": "file:///etc/hosts"}})},
        [("$.storage.files[0].contents.source", "invalid url scheme")],
        [],
    ),
    (
        "gzip",
        ALL,
        {"storage": files({"path": "/a", "contents": {"source": "data:,x", "compression": "gzip"}})},
        [],
        [],
    ),
    (
        "only gzip",
        ALL,
        {"storage": files({"path": "/a", "contents": {"source": "data:,x", "compression": "xz"}})},
        [("$.storage.files[0].contents.compression", "invalid compression method")],
        [],
    ),
    (
        "compression on a merged config is unknown in 3.0",
        ["3.0.0"],
        {"ignition": {"config": {"merge": [{"source": "data:,x", "compression": "xz"}]}}},
        [],
        [("$.ignition.config.merge[0].compression", "unused key compression")],
    ),
    (
        "merge needs a source from 3.1",
        since("3.1.0"),
        {"ignition": {"config": {"merge": [{}]}}},
        [("$.ignition.config.merge[0]", "source is required")],
        [],
    ),
    ("merge without source in 3.0", ["3.0.0"], {"ignition": {"config": {"merge": [{}]}}}, [], []),
    (
        "http headers need http(s)",
        since("3.1.0"),
        {
            "storage": files(
                {
                    "path": "/a",
                    "contents": {"source": "data:,x", "httpHeaders": [{"name": "a", "value": "b"}]},
                }
            )
        },
        [("$.storage.files[0].contents.httpHeaders", "cannot use HTTP headers with this source scheme")],
        [],
    ),
    (
        "proxy scheme",
        since("3.1.0"),
        {"ignition": {"proxy": {"httpProxy": "socks5://p"}}},
        [("$.ignition.proxy.httpProxy", "proxies must be http(s)")],
        [],
    ),
    (
        "plain http proxy for https",
        since("3.1.0"),
        {"ignition": {"proxy": {"httpsProxy": "http://p"}}},
        [],
        [("$.ignition.proxy.httpsProxy", "insecure plaintext HTTP proxy specified for HTTPS resources")],
    ),
    (
        "link target required from 3.3",
        since("3.3.0"),
        {"storage": {"links": [{"path": "/a"}]}},
        [("$.storage.links[0].target", "link target is required")],
        [],
    ),
    ("link without target before 3.3", before("3.3.0"), {"storage": {"links": [{"path": "/a"}]}}, [], []),
    (
        "hard link to a directory",
        ALL,
        {
            "storage": {
                "links": [{"path": "/a", "target": "/d", "hard": True}],
                "directories": [{"path": "/d"}],
            }
        },
        [("$.storage.links[0]", "hard link target is a directory")],
        [],
    ),
    (
        "duplicate user",
        ALL,
        {"passwd": {"users": [{"name": "core"}, {"name": "core"}]}},
        [("$.passwd.users[1]", "duplicate entry defined")],
        [],
    ),
    (
        "duplicate group",
        ALL,
        {"passwd": {"groups": [{"name": "g"}, {"name": "g"}]}},
        [("$.passwd.groups[1]", "duplicate entry defined")],
        [],
    ),
    (
        "duplicate ssh key",
        ALL,
        {"passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["k", "k"]}]}},
        [("$.passwd.users[0].sshAuthorizedKeys[1]", "duplicate entry defined")],
        [],
    ),
    (
        "shouldExist unknown before 3.2",
        before("3.2.0"),
        {"passwd": {"users": [{"name": "core", "shouldExist": False}]}},
        [],
        [("$.passwd.users[0].shouldExist", "unused key shouldExist")],
    ),
    (
        "kernel argument in both lists",
        since("3.3.0"),
        {"kernelArguments": {"shouldExist": ["quiet"], "shouldNotExist": ["quiet"]}},
        [("$.kernelArguments.shouldNotExist[0]", "duplicate entry defined")],
        [],
    ),
    (
        "disk device required",
        ALL,
        {"storage": {"disks": [{"device": ""}]}},
        [("$.storage.disks[0].device", "disk device is required")],
        [],
    ),
    (
        "partition numbers collide",
        ALL,
        {"storage": {"disks": [{"device": "/dev/vda", "partitions": [{"number": 1}, {"number": 1}]}]}},
        [("$.storage.disks[0].partitions[1]", "partition numbers collide")],
        [],
    ),
    (
        "partitions overlap",
        ALL,
        {
            "storage": {
                "disks": [
                    {
                        "device": "/dev/vda",
                        "partitions": [
                            {"number": 1, "startMiB": 1, "sizeMiB": 10},
                            {"number": 2, "startMiB": 5, "sizeMiB": 10},
                        ],
                    }
                ]
            }
        },
        [("$.storage.disks[0].partitions[1]", "partitions overlap")],
        [],
    ),
    (
        "raid level required from 3.3",
        since("3.3.0"),
        {"storage": {"raid": [{"name": "md", "devices": ["/dev/a"]}]}},
        [("$.storage.raid[0].level", "raid level is required")],
        [],
    ),
    (
        "raid without level before 3.3",
        before("3.3.0"),
        {"storage": {"raid": [{"name": "md", "devices": ["/dev/a"]}]}},
        [("$.storage.raid[0].level", "unrecognized raid level")],
        [],
    ),
    (
        "filesystem format none from 3.3",
        since("3.3.0"),
        {"storage": {"filesystems": [{"device": "/dev/a", "format": "none"}]}},
        [],
        [],
    ),
    (
        "filesystem format none before 3.3",
        before("3.3.0"),
        {"storage": {"filesystems": [{"device": "/dev/a", "format": "none"}]}},
        [("$.storage.filesystems[0].format", "invalid filesystem format")],
        [],
    ),
    (
        "virtiofs only in 3.7.0-experimental",
        ["3.7.0-experimental"],
        {"storage": {"filesystems": [{"device": "share", "format": "virtiofs", "path": "/mnt"}]}},
        [],
        [],
    ),
    (
        "ext4 label length",
        ALL,
        {"storage": {"filesystems": [{"device": "/dev/a", "format": "ext4", "label": "x" * 17}]}},
        [
            (
                "$.storage.filesystems[0].label",
                "filesystem labels cannot be longer than 16 characters when using ext4",
            )
        ],
        [],
    ),
    (
        "luks unknown before 3.2",
        before("3.2.0"),
        {"storage": {"luks": [{"name": "a/b"}]}},
        [],
        [("$.storage.luks", "unused key luks")],
    ),
    (
        "luks name without slash",
        since("3.2.0"),
        {"storage": {"luks": [{"name": "a/b", "device": "/dev/a"}]}},
        [("$.storage.luks[0].name", "device names cannot contain slashes")],
        [],
    ),
    (
        "custom clevis pin is checked from 3.2 to 3.5",
        ["3.2.0", "3.3.0", "3.4.0", "3.5.0"],
        {
            "storage": {
                "luks": [
                    {"name": "l", "device": "/dev/a", "clevis": {"custom": {"pin": "x", "config": "{}"}}}
                ]
            }
        },
        [("$.storage.luks[0].clevis.custom.pin", "unsupported clevis pin")],
        [],
    ),
    (
        "any custom clevis pin from 3.6",
        ["3.6.0", "3.7.0-experimental"],
        {
            "storage": {
                "luks": [
                    {"name": "l", "device": "/dev/a", "clevis": {"custom": {"pin": "x", "config": "{}"}}}
                ]
            }
        },
        [],
        [],
    ),
    (
        "an empty custom object conflicts with tpm2 in 3.2 only",
        ["3.2.0"],
        {"storage": {"luks": [{"name": "l", "device": "/dev/a", "clevis": {"custom": {}, "tpm2": True}}]}},
        [("$.storage.luks[0].clevis", "cannot use custom clevis config with tpm2, tang, or threshold")],
        [],
    ),
    (
        "cex with clevis from 3.5",
        since("3.5.0"),
        {
            "storage": {
                "luks": [
                    {"name": "l", "device": "/dev/a", "cex": {"enabled": True}, "clevis": {"tpm2": True}}
                ]
            }
        },
        [("$.storage.luks[0].cex", "cannot use cex with clevis")],
        [],
    ),
    (
        "unused key",
        ALL,
        {"storage": {"files": [{"path": "/a", "contentz": {}}]}},
        [],
        [("$.storage.files[0].contentz", "unused key contentz")],
    ),
    (
        "wrong JSON type",
        ALL,
        {"storage": {"files": [{"path": "/a", "mode": "0644"}]}},
        [
            (
                "$.storage.files[0].mode",
                "json: cannot unmarshal string into Go struct field Config.storage.files.0.mode of type int",
            )
        ],
        [],
    ),
]


def _expand() -> list[Any]:
    out = []
    for rule, versions, sections, errors, warnings in CASES:
        for version in versions:
            out.append(pytest.param(version, sections, errors, warnings, id=f"{rule} [{version}]"))
    return out


@pytest.mark.parametrize(("version", "sections", "errors", "warnings"), _expand())
def test_rule(
    version: str, sections: dict[str, Any], errors: list[tuple[str, str]], warnings: list[tuple[str, str]]
) -> None:
    report = check(config(version, **sections))
    got_errors = [(e.path, e.message) for e in report.errors]
    got_warnings = [(e.path, e.message) for e in report.warnings]
    assert report.valid is (not errors), got_errors
    for expected in errors:
        assert expected in got_errors
    for expected in warnings:
        assert expected in got_warnings


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("2.2.0", "unsupported config version"),
        ("3.6.0-experimental", "unsupported config version"),
        ("3.0.0+build", "unsupported config version"),
        ("3.8.0", "unsupported config version"),
        ("3.0", "invalid config version (couldn't parse)"),
        ("v3.0.0", "invalid config version (couldn't parse)"),
        ("", "invalid config version (couldn't parse)"),
    ],
)
def test_rejected_versions(version: str, message: str) -> None:
    report = check(json.dumps({"ignition": {"version": version}}).encode())
    assert [(e.path, e.message) for e in report.errors] == [("$.ignition.version", message)]


@pytest.mark.parametrize("version", ["03.0.0", "3.01.0", "3.2.0-"])
def test_versions_go_semver_reads_as_supported(version: str) -> None:
    # go-semver parses each number with strconv.ParseInt (leading zeros allowed); "-" leaves an empty
    # pre-release, which equals none.
    assert check(json.dumps({"ignition": {"version": version}}).encode()).valid
