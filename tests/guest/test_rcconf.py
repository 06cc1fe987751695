"""rc.conf.d files: exact bytes, other lines kept, no rewrite when unchanged, and sh reads back the value."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fpvm.guest import rcconf
from fpvm.guest.context import make_context
from fpvm.guest.rcconf import RcConfError, RcConfSet
from fpvm.guest.rootfs import RootFS


def sh_value(path: Path, name: str) -> str:
    """What /bin/sh (Debian's dash) sees after sourcing ``path``, as rc.subr's load_rc_config does."""
    out = subprocess.run(
        ["sh", "-c", f'. "$1"; printf %s "${name}"', "sh", str(path)],
        capture_output=True,
        check=True,
    )
    return out.stdout.decode()


def test_new_file_is_exactly_one_line(tmp_path: Path) -> None:
    root = RootFS(tmp_path)
    assert rcconf.set_values(root, "podman_service", {"podman_service_enable": "YES"})
    f = tmp_path / "etc/rc.conf.d/podman_service"
    assert f.read_bytes() == b'podman_service_enable="YES"\n'
    assert f.stat().st_mode & 0o777 == 0o644


def test_other_lines_kept_and_value_replaced_in_place(tmp_path: Path) -> None:
    f = tmp_path / "etc/rc.conf.d/podman_service"
    f.parent.mkdir(parents=True)
    f.write_bytes(
        b"# set by the admin\n"
        b"podman_service_flags='--time=0 --log-level=debug'\n"
        b'podman_service_enable="NO"  # off for now\n'
        b"\n"
        b"other=1"  # no final newline
    )
    assert rcconf.set_values(
        RootFS(tmp_path), "podman_service", {"podman_service_enable": "YES", "x_y": "a b"}
    )
    assert f.read_bytes() == (
        b"# set by the admin\n"
        b"podman_service_flags='--time=0 --log-level=debug'\n"
        b'podman_service_enable="YES"\n'
        b"\n"
        b"other=1\n"
        b'x_y="a b"\n'
    )


def test_unchanged_value_is_not_rewritten(tmp_path: Path) -> None:
    f = tmp_path / "etc/rc.conf.d/sshd"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"# keep me\nsshd_enable=YES\n")
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    before = f.stat()
    # 'YES' written bare, in double or single quotes is the same value for sh: nothing to do.
    assert not rcconf.set_values(RootFS(tmp_path), "sshd", {"sshd_enable": "YES"})
    f.write_bytes(b"# keep me\nsshd_enable='YES'\n")
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    before = f.stat()
    assert not rcconf.set_values(RootFS(tmp_path), "sshd", {"sshd_enable": "YES"})
    after = f.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert f.read_bytes() == b"# keep me\nsshd_enable='YES'\n"


@pytest.mark.parametrize(
    "value",
    ["plain", "with space", 'dq"inside', "dollar $HOME and ${x}", "back`tick`", "back\\slash", "it's", ""],
)
def test_sh_reads_back_exactly_what_was_written(tmp_path: Path, value: str) -> None:
    root = RootFS(tmp_path)
    rcconf.set_values(root, "svc", {"svc_value": value})
    f = tmp_path / "etc/rc.conf.d/svc"
    assert sh_value(f, "svc_value") == value
    # and our own reader agrees, so the next run sees no change
    assert rcconf.read_values(root, "svc") == {"svc_value": value}
    assert not rcconf.set_values(root, "svc", {"svc_value": value})


def test_unquote_forms() -> None:
    assert rcconf.unquote('"a b"') == "a b"
    assert rcconf.unquote("'a b'") == "a b"
    assert rcconf.unquote("YES") == "YES"
    assert rcconf.unquote('"YES" # comment') == "YES"
    assert rcconf.unquote('a"b c"d') == "ab cd"
    assert rcconf.unquote('"$other"') is None  # needs expansion: treated as different
    assert rcconf.unquote("`cmd`") is None


def test_expansion_values_are_replaced(tmp_path: Path) -> None:
    f = tmp_path / "etc/rc.conf.d/x"
    f.parent.mkdir(parents=True)
    f.write_bytes(b'x_v="$y"\n')
    assert rcconf.set_values(RootFS(tmp_path), "x", {"x_v": "$y"})
    assert f.read_bytes() == b'x_v="\\$y"\n'
    assert sh_value(f, "x_v") == "$y"


def test_remove_variable_and_empty_file(tmp_path: Path) -> None:
    root = RootFS(tmp_path)
    rcconf.set_values(root, "p", {"p_a": "1", "p_b": "2"})
    assert rcconf.set_values(root, "p", {"p_a": None})
    assert (tmp_path / "etc/rc.conf.d/p").read_bytes() == b'p_b="2"\n'
    assert rcconf.set_values(root, "p", {"p_b": None})
    assert not (tmp_path / "etc/rc.conf.d/p").exists()
    assert not rcconf.set_values(root, "p", {"p_b": None})


def test_directory_form(tmp_path: Path) -> None:
    # load_rc_config sources every file of /etc/rc.conf.d/NAME when it is a directory.
    (tmp_path / "etc/rc.conf.d/network").mkdir(parents=True)
    (tmp_path / "etc/rc.conf.d/network/admin").write_bytes(b'ifconfig_vtnet0="DHCP"\n')
    assert rcconf.set_values(RootFS(tmp_path), "network", {"ifconfig_vtnet1": "DHCP"})
    assert (tmp_path / "etc/rc.conf.d/network/fpvm").read_bytes() == b'ifconfig_vtnet1="DHCP"\n'
    assert (tmp_path / "etc/rc.conf.d/network/admin").read_bytes() == b'ifconfig_vtnet0="DHCP"\n'


@pytest.mark.parametrize(
    ("service", "values"),
    [
        ("../etc", {"a": "b"}),
        ("svc", {"bad-name": "x"}),
        ("svc", {"1abc": "x"}),
        ("svc", {"ok": "line\nbreak"}),
    ],
)
def test_bad_input_is_refused(tmp_path: Path, service: str, values: dict[str, str | None]) -> None:
    with pytest.raises(RcConfError):
        RcConfSet(service, values)
    with pytest.raises(RcConfError):
        rcconf.set_values(RootFS(tmp_path), service, values)
    assert not (tmp_path / "etc").exists()


def test_action_applies_once(tmp_path: Path) -> None:
    ctx = make_context(str(tmp_path), record=str(tmp_path / "rec.jsonl"))
    action = RcConfSet("podman_service", {"podman_service_enable": "YES"}, source="$.systemd.units[0]")
    assert action.to_json() == {
        "kind": "rcconf",
        "disposition": "translate",
        "source": "$.systemd.units[0]",
        "service": "podman_service",
        "values": {"podman_service_enable": "YES"},
    }
    assert action.apply(ctx) is True
    assert action.apply(ctx) is False
    assert ctx.commands == []  # rc configuration is a file, never sysrc
