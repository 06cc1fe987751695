"""Ignition configs from podman versions and providers beyond tests/fixtures provision correctly.

The configs in ``podman-configs/`` were written by podman's own ignition builder (``pkg/machine/ignition.go``
in 4.x, ``pkg/machine/ignition/ignition.go`` in 5.x and main), driven the way ``podman machine init``
drives it, for qemu, applehv, libkrun, hyperv and wsl, with ``--username``, ``--rootful``, volumes, host
uid 501/1000/0, time zones, certificates, ``--playbook`` and ``--swap``; see ``podman-configs/README.md``.

Expectations are read from each config's JSON here, by hand, not through the agent's mapping table.
Real peers: Debian's ``visudo -cf`` for the sudoers file; the recorded ``pw`` argv against pw(8)'s
SYNOPSIS (``guest_synopsis``).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from guest_support import (
    assert_links_applied,
    assert_second_run_changes_nothing,
    assert_sudoers_valid,
    provision_config,
    recorded,
)
from guest_synopsis import check_pw_argv

from fpvm_runner import run_fpvm

CONFIG_DIR = Path(__file__).resolve().parent / "podman-configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.ign"))
IS_ROOT = os.geteuid() == 0
# podman's groups for a --username user (4.9+) and what FreeBSD grants instead (issue 3).
PODMAN_ADMIN_GROUPS = {"sudo", "wheel"}
MARKERS = ("/etc/containers/podman-machine", "/etc/podman-machine")
# Linux-only places that must stay empty on FreeBSD (systemd, tmpfiles, NetworkManager, chrony).
LINUX_ONLY = (
    "etc/systemd",
    "var/lib/systemd",
    "etc/NetworkManager",
    "etc/chrony.d",
    "usr/local/bin/net-health-recovery.sh",  # podman 4.9 qemu on macOS, with its skipped unit
)


def _decode(source: str | None) -> bytes:
    if source is None:
        return b""
    assert source.startswith("data:,")
    return urllib.parse.unquote_to_bytes(source[len("data:,") :])


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def _home(root: Path, name: str) -> Path:
    return root / ("root" if name == "root" else "usr/home/" + name)


def _accounts(root: Path) -> dict[str, list[str]]:
    lines = (root / "etc/master.passwd").read_text().splitlines()
    return {line.split(":", 1)[0]: line.split(":") for line in lines if line and not line.startswith("#")}


def _podman_users(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The accounts podman logs in as: every user but root that should exist."""
    return [u for u in cfg["passwd"]["users"] if u["name"] != "root" and u.get("shouldExist", True)]


def _unit_section(contents: str, section: str) -> dict[str, str]:
    """Key=value pairs of one section of a systemd unit (enough for podman's mount units)."""
    out: dict[str, str] = {}
    current = None
    for raw in contents.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def test_every_config_is_valid_ignition() -> None:
    """`fpvm ignition validate` accepts what podman writes (spec 3.2.0, decimal modes, empty objects)."""
    assert len(CONFIGS) >= 15
    res = run_fpvm("ignition", "validate", *map(str, CONFIGS))
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.fixture(scope="module", params=CONFIGS, ids=[p.stem for p in CONFIGS])
def provisioned(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    config_path: Path = request.param
    provisioned = provision_config(config_path, tmp_path_factory.mktemp(config_path.stem))
    provisioned["plan"] = run_fpvm("guest", "plan", "--config", str(config_path), "--json")
    return provisioned


def test_config_is_valid_and_provisions(provisioned: dict[str, Any]) -> None:
    res = provisioned["result"]
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "fpvm: provisioned" in res.stdout and " 0 failed" in res.stdout, res.stdout
    assert provisioned["cfg"]["ignition"]["version"] == "3.2.0"


def test_users_uid_keys_and_pw_argv(provisioned: dict[str, Any]) -> None:
    root: Path = provisioned["root"]
    cfg = provisioned["cfg"]
    accounts = _accounts(root)
    pw_cmds = [c for c in recorded(provisioned["rec"]) if c[0] == "pw"]
    for argv in pw_cmds:
        check_pw_argv(argv, str(root))
    useradds = {str(check_pw_argv(c, str(root))["-n"]): c for c in pw_cmds if c[3] == "useradd"}
    for user in cfg["passwd"]["users"]:
        name = user["name"]
        if user.get("shouldExist") is False:
            # podman 4.9+ --username X: `core` must not exist; the staged root never had it.
            assert name not in accounts
            assert not [c for c in pw_cmds if c[3] == "userdel"]
            continue
        keys = user.get("sshAuthorizedKeys", [])
        ak = _home(root, name) / ".ssh/authorized_keys"
        assert ak.read_bytes() == "".join(k + "\n" for k in keys).encode(), name
        assert _mode(ak) == 0o600 and _mode(ak.parent) == 0o700
        if name == "root":
            assert accounts["root"][2] == "0"
            continue
        opts = check_pw_argv(useradds[name], str(root))
        assert opts["-d"] == f"/home/{name}" and opts["-m"] is True and opts["-s"] == "/bin/sh"
        assert opts["-w"] == "no"
        uid = user["uid"]
        if uid == 0:
            # a host running podman as root: uid 0 is root's, the user gets a free uid instead
            assert "-u" not in opts
            assert accounts[name][2] not in ("", "0")
        else:
            assert opts["-u"] == str(uid)
            assert accounts[name][2] == str(uid)
        if PODMAN_ADMIN_GROUPS & set(user.get("groups", [])):
            assert "wheel" in str(opts["-G"]).split(",")
        assert (_home(root, name)).is_dir()
        if IS_ROOT:
            assert ak.stat().st_uid == int(accounts[name][2])


def test_sudoers_for_podman_users(provisioned: dict[str, Any]) -> None:
    assert_sudoers_valid(provisioned["root"], [user["name"] for user in _podman_users(provisioned["cfg"])])


def test_marker_and_containers_files(provisioned: dict[str, Any]) -> None:
    root: Path = provisioned["root"]
    files = {f["path"]: _decode(f["contents"].get("source")) for f in provisioned["cfg"]["storage"]["files"]}
    markers = [m for m in MARKERS if m in files]
    assert markers, "every podman config carries a machine marker"
    for marker in markers:
        # FreeBSD's podman reads exactly these Linux paths (go.podman.io/common pkg/machine)
        assert (root / marker.lstrip("/")).read_bytes() == files[marker]
        assert files[marker].decode().strip() in ("qemu", "applehv", "libkrun", "hyperv", "wsl")
    for path, data in files.items():
        if path.startswith("/etc/containers/"):
            mapped = root / "usr/local/etc/containers" / path[len("/etc/containers/") :]
            assert mapped.read_bytes() == data, path
        elif path.startswith("/home/") and "/.config/systemd/" not in path:
            assert (root / "usr/home" / path[len("/home/") :]).read_bytes() == data, path
        if path.startswith("/etc/containers/certs.d/"):
            # podman's SSL_CERT_FILE/SSL_CERT_DIR name the Linux path: it must hold the same file
            assert (root / path.lstrip("/")).read_bytes() == data, path
    ssl = files.get("/etc/profile.d/podman-machine-ssl.sh", b"").decode()
    for line in ssl.splitlines():
        # export SSL_CERT_FILE="/etc/containers/certs.d/x.pem" (5.0-5.8): the path exists for login shells
        value = line.split("=", 1)[1].strip('"')
        assert (root / value.lstrip("/")).exists(), line
    for user in _podman_users(provisioned["cfg"]):
        conf = _home(root, user["name"]) / ".config/containers/containers.conf"
        assert conf.read_bytes().startswith(b'[containers]\nnetns="bridge"\n')
    for linux_only in LINUX_ONLY:
        assert not (root / linux_only).exists(), linux_only


def test_tmpfiles_kept_and_docker_sock_linked_at_boot(provisioned: dict[str, Any]) -> None:
    """Fedora CoreOS applies podman's tmpfiles.d file at boot: /run/docker.sock -> the API socket."""
    root: Path = provisioned["root"]
    files = {f["path"]: _decode(f["contents"].get("source")) for f in provisioned["cfg"]["storage"]["files"]}
    tmpfiles = {p: d for p, d in files.items() if p.startswith("/etc/tmpfiles.d/")}
    if not tmpfiles:  # (no such version/provider today) nothing asks for docker.sock: none is made
        assert not (root / "var/run/docker.sock").is_symlink()
        return
    for path, data in tmpfiles.items():
        assert (root / path.lstrip("/")).read_bytes() == data, path
    line = tmpfiles["/etc/tmpfiles.d/podman-docker.conf"].decode().split()
    assert line[:2] == ["L+", "/run/docker.sock"]
    assert os.readlink(root / "var/run/docker.sock") == line[-1]  # /run is /var/run on FreeBSD
    plan = json.loads(provisioned["plan"].stdout)
    actions = plan["actions"] if isinstance(plan, dict) else plan
    assert any(a["kind"] == "tmpfiles" for a in actions)


def test_links_timezone_and_docker(provisioned: dict[str, Any]) -> None:
    assert_links_applied(provisioned["root"], provisioned["cfg"])


def test_podman_api_enabled_for_every_user(provisioned: dict[str, Any]) -> None:
    root: Path = provisioned["root"]
    rc = root / "etc/rc.conf.d/podman_service"
    res = subprocess.run(
        ["sh", "-c", '. "$1"; printf %s "$podman_service_enable"', "sh", str(rc)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert res.stdout == "YES"
    api = root / "var/run/podman/podman.sock"
    assert os.readlink(root / "run") == "var/run"
    for user in _podman_users(provisioned["cfg"]):
        # podman forwards the host's socket to /run/user/<host uid>/podman/podman.sock (rootless)
        link = root / f"var/run/user/{user['uid']}/podman/podman.sock"
        assert os.path.normpath(link.parent / os.readlink(link)) == str(api)


def test_every_unit_classified_and_mounts_planned(provisioned: dict[str, Any]) -> None:
    plan = provisioned["plan"]
    assert plan.returncode == 0, plan.stderr
    actions = json.loads(plan.stdout)
    sources = {a.get("source") for a in actions}
    units = provisioned["cfg"]["systemd"]["units"]
    for i, unit in enumerate(units):
        assert f"$.systemd.units[{i}]" in sources, unit["name"]
    from fpvm.guest.systemd import UNKNOWN

    # Units podman sends that have no FreeBSD counterpart yet are reported as such; all others are named
    # in the agent's table (a new podman unit shows up here first).
    untranslated = {"playbook.service", "vsock-network.service"}
    for a in actions:
        if a["kind"] == "note" and a.get("note") == UNKNOWN.meaning:
            assert a["subject"] in untranslated, a
    mounts = {a["target"]: a for a in actions if a["kind"] == "mount"}
    expected = {}
    for i, unit in enumerate(units):
        if unit["name"].endswith(".mount") and unit.get("enabled") and unit.get("contents"):
            section = _unit_section(unit["contents"], "Mount")
            if any(c.isspace() for c in section["Where"]):
                # documented: mount points with blanks are not mounted (mount -p / fstab(5) cannot hold
                # them plainly); the unit is reported and everything else is provisioned
                notes = [
                    a for a in actions if a["kind"] == "note" and a.get("source") == f"$.systemd.units[{i}]"
                ]
                assert any("not mounted" in a["note"] and "space" in a["note"] for a in notes), notes
                continue
            expected[section["Where"]] = section["What"]
    assert {t: m["tag"] for t, m in mounts.items()} == expected
    for target, m in mounts.items():
        assert m["argv"][:3] == ["/sbin/mount", "-t", "p9fs"] and m["argv"][-2:] == [expected[target], target]


def test_second_run_changes_nothing(provisioned: dict[str, Any]) -> None:
    assert_second_run_changes_nothing(provisioned)


def test_unmountable_unit_is_reported_and_the_other_volumes_still_mount(tmp_path: Path) -> None:
    """podman 5.5+ escapes a macOS folder with a space into a unit name; FreeBSD skips just that volume."""
    from fpvm.guest.mounts import plan_mounts
    from fpvm.guest.rootfs import RootFS
    from fpvm.ignition import parse

    def unit(name: str, tag: str, where: str) -> dict[str, Any]:
        contents = f"[Mount]\nWhat={tag}\nWhere={where}\nType=virtiofs\n[Install]\nWantedBy=local-fs.target\n"
        return {"name": name, "enabled": True, "contents": contents}

    cfg = {
        "ignition": {"version": "3.2.0"},
        "systemd": {
            "units": [
                unit("Users-me-My\\x20Projects.mount", "a" * 36, "/Users/me/My Projects"),
                unit("Users.mount", "b" * 36, "/Users"),
            ]
        },
    }
    actions = plan_mounts(parse(json.dumps(cfg).encode()), RootFS(tmp_path))
    notes = [a for a in actions if a.kind == "note"]
    assert [(n.source, "not mounted" in n.note and "contains a space" in n.note) for n in notes] == [
        ("$.systemd.units[0]", True)
    ]
    mounts = [a.to_json() for a in actions if a.kind == "mount"]
    assert [(m["tag"], m["target"]) for m in mounts] == [("b" * 36, "/Users")]
