"""Every podman Ignition config provisions a staged FreeBSD root through the CLI contract.

Expectations are derived here from the fixture JSON by hand (not through the agent's own mapping
table), so a wrong table entry fails a test. Real peers: Debian's ``visudo -cf`` for the sudoers
file and ``ssh-keygen -l`` for the authorized_keys of the real capture.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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
    make_root,
    provision,
    provision_config,
    recorded,
    snapshot,
)
from guest_synopsis import check_pw_argv

from fpvm_support import GROUP, MASTER_PASSWD, PODMAN_CAPTURE, passwd_from_master, podman_ignition_configs

CONFIGS = podman_ignition_configs()
IS_ROOT = os.geteuid() == 0


def _decode(source: str) -> bytes:
    assert source.startswith("data:,")
    return urllib.parse.unquote_to_bytes(source[len("data:,") :])


def _files(cfg: dict[str, Any]) -> dict[str, bytes]:
    out = {}
    for f in cfg.get("storage", {}).get("files", []):
        out[f["path"]] = _decode(f["contents"].get("source", "data:,"))
    return out


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


@pytest.fixture(scope="module", params=CONFIGS, ids=[p.name for p in CONFIGS])
def provisioned(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    config_path: Path = request.param
    return provision_config(config_path, tmp_path_factory.mktemp(config_path.stem))


def test_exit_status_and_summary(provisioned: dict[str, Any]) -> None:
    res = provisioned["result"]
    assert res.returncode == 0, res.stderr + res.stdout
    assert "fpvm: provisioned" in res.stdout
    assert "0 failed" in res.stdout


def test_users_and_recorded_pw(provisioned: dict[str, Any]) -> None:
    root: Path = provisioned["root"]
    cfg = provisioned["cfg"]
    core = next(u for u in cfg["passwd"]["users"] if u["name"] == "core")
    cmds = recorded(provisioned["rec"])
    pw_cmds = [c for c in cmds if c[0] == "pw"]
    for argv in pw_cmds:
        check_pw_argv(argv, str(root))
    useradds = [c for c in pw_cmds if c[3] == "useradd"]
    assert len(useradds) == 1
    opts = check_pw_argv(useradds[0], str(root))
    assert opts["-n"] == "core"
    assert opts["-u"] == str(core["uid"])
    assert opts["-d"] == "/home/core"
    assert opts["-m"] is True and opts["-M"] == "0755"
    assert opts["-s"] == "/bin/sh"
    assert opts["-w"] == "no"  # no password login, but not locked
    # The staged account, as pw would have written it (master.passwd fields, passwd(5) on FreeBSD).
    master = (root / "etc/master.passwd").read_text().splitlines()
    line = next(m for m in master if m.startswith("core:"))
    uid = core["uid"]
    assert line == f"core:*:{uid}:{uid}::0:0::/home/core:/bin/sh"
    assert not line.split(":")[1].startswith(("!", "*LOCKED*"))
    assert f"core:*:{uid}:{uid}::/home/core:/bin/sh" in (root / "etc/passwd").read_text().splitlines()
    assert f"core:*:{uid}:" in (root / "etc/group").read_text()
    assert _mode(root / "etc/master.passwd") == 0o600
    # root keeps its entry untouched (first line of FreeBSD's master.passwd)
    assert master[0] == "root::0:0::0:0:Charlie &:/root:/bin/sh"
    # The home directory pw -m would have created: /home -> usr/home, owned by the user.
    home = root / "usr/home/core"
    assert home.is_dir() and _mode(home) == 0o755
    if IS_ROOT:
        assert (home.stat().st_uid, home.stat().st_gid) == (uid, uid)


def test_authorized_keys(provisioned: dict[str, Any]) -> None:
    root: Path = provisioned["root"]
    cfg = provisioned["cfg"]
    for user in cfg["passwd"]["users"]:
        home = root / ("root" if user["name"] == "root" else "usr/home/" + user["name"])
        ak = home / ".ssh/authorized_keys"
        assert ak.read_bytes() == "".join(k + "\n" for k in user["sshAuthorizedKeys"]).encode()
        assert _mode(ak) == 0o600
        assert _mode(home / ".ssh") == 0o700
        if IS_ROOT:
            want = 0 if user["name"] == "root" else user["uid"]
            assert ak.stat().st_uid == want and (home / ".ssh").stat().st_uid == want
    if provisioned["config_path"].parent == PODMAN_CAPTURE and shutil.which("ssh-keygen"):
        ak = root / "usr/home/core/.ssh/authorized_keys"
        out = subprocess.run(["ssh-keygen", "-l", "-f", str(ak)], capture_output=True, text=True, check=False)
        assert out.returncode == 0 and "ED25519" in out.stdout, out.stderr


def test_sudoers_passes_visudo(provisioned: dict[str, Any]) -> None:
    text = assert_sudoers_valid(provisioned["root"], ["core"])
    assert "root" not in text.split("\n", 1)[1]


def test_files_mapped_to_freebsd(provisioned: dict[str, Any]) -> None:
    root: Path = provisioned["root"]
    files = _files(provisioned["cfg"])
    for path, data in files.items():
        if path.startswith("/etc/containers/"):
            mapped = root / ("usr/local/etc/containers/" + path[len("/etc/containers/") :])
            assert mapped.read_bytes() == data, path
            if path == "/etc/containers/podman-machine":
                # the marker stays at the Linux path too: FreeBSD's podman reads exactly that
                assert (root / "etc/containers/podman-machine").read_bytes() == data
            else:
                assert not (root / path.lstrip("/")).exists(), path
        elif path == "/etc/podman-machine":
            assert (root / "etc/podman-machine").read_bytes() == data
        elif path.startswith(("/etc/systemd/", "/var/lib/systemd/", "/etc/sysctl.d/")) or (
            "/.config/systemd/" in path or path.startswith("/etc/chrony")
        ):
            assert not (root / path.lstrip("/")).exists(), f"Linux-only {path} was written"
        elif path.startswith("/home/"):
            assert (root / "usr/home" / path[len("/home/") :]).read_bytes() == data
        else:
            assert (root / path.lstrip("/")).read_bytes() == data, path
    if "/etc/containers/containers.conf" in files:
        conf = root / "usr/local/etc/containers/containers.conf"
        assert conf.read_bytes() == b"[engine]\nmachine_enabled=true\n"
        assert _mode(conf) == 0o644
    user_conf = root / "usr/home/core/.config/containers/containers.conf"
    assert user_conf.read_bytes() == files["/home/core/.config/containers/containers.conf"]
    assert _mode(user_conf) == 0o744
    assert _mode(root / "etc/subuid") == 0o744
    for linux_only in ("etc/systemd", "var/lib/systemd", "etc/environment.d"):
        assert not (root / linux_only).exists()
    # tmpfiles.d is kept: the agent applies its L+ line (docker.sock) at every boot, as FCOS does
    docker = files.get("/etc/tmpfiles.d/podman-docker.conf")
    if docker is not None:
        assert os.readlink(root / "var/run/docker.sock") == docker.decode().split()[-1]


def test_directories_owned_by_user(provisioned: dict[str, Any]) -> None:
    root: Path = provisioned["root"]
    cfg = provisioned["cfg"]
    core_uid = next(u for u in cfg["passwd"]["users"] if u["name"] == "core")["uid"]
    for d in ("usr/home/core/.config", "usr/home/core/.config/containers"):
        assert (root / d).is_dir() and _mode(root / d) == 0o755
        if IS_ROOT:
            assert (root / d).stat().st_uid == core_uid
    assert not (root / "usr/home/core/.config/systemd").exists()


def test_links(provisioned: dict[str, Any]) -> None:
    assert_links_applied(provisioned["root"], provisioned["cfg"])


def test_rc_conf_d(provisioned: dict[str, Any]) -> None:
    root: Path = provisioned["root"]
    text = (root / "etc/rc.conf.d/podman_service").read_text()
    assert 'podman_service_enable="YES"\n' in text
    res = subprocess.run(
        [
            "sh",
            "-c",
            '. "$1"; printf %s "$podman_service_enable"',
            "sh",
            str(root / "etc/rc.conf.d/podman_service"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert res.stdout == "YES"


def test_state_report_and_log(provisioned: dict[str, Any]) -> None:
    root: Path = provisioned["root"]
    state = json.loads((root / "var/db/fpvm/state.json").read_text())
    assert state["config_sha256"] == hashlib.sha256(provisioned["config_path"].read_bytes()).hexdigest()
    report = json.loads((root / "var/db/fpvm/last-boot.json").read_text())
    assert report["recorded"] is True
    assert any(a["kind"] == "user" for a in report["actions"])
    assert not any("error" in a for a in report["actions"])
    assert "useradd" in (root / "var/log/fpvm.log").read_text()
    assert _mode(root / "var/db/fpvm") == 0o700


def test_second_run_changes_nothing(provisioned: dict[str, Any]) -> None:
    assert_second_run_changes_nothing(provisioned)


CAPTURE_KEY = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIY13ql7ogiegYHHFbAKgAnlG//v6FRNqeCt518RJC8p user@host\n"
# Every node the 4.3.1 capture's config creates or changes in the staged root:
# (type, mode, uid, contents or link target).
CAPTURE_TREE: dict[str, tuple[str, int, int, bytes | str | None]] = {
    "etc/containers": ("dir", 0o755, 0, None),
    "etc/containers/podman-machine": ("file", 0o644, 0, b"qemu\n"),
    "etc/localtime": ("link", 0, 0, "/usr/share/zoneinfo/Europe/London"),
    "etc/profile.d": ("dir", 0o755, 0, None),
    "etc/profile.d/docker-host.sh": (
        "file", 0o644, 0, b'export DOCKER_HOST="unix://$(podman info -f "{{.Host.RemoteSocket.Path}}")"\n'
    ),
    "etc/rc.conf.d": ("dir", 0o755, 0, None),
    "etc/rc.conf.d/podman_service": ("file", 0o644, 0, b'podman_service_enable="YES"\n'),
    "etc/subgid": ("file", 0o744, 0, b"core:100000:1000000"),
    "etc/subuid": ("file", 0o744, 0, b"core:100000:1000000"),
    "etc/tmpfiles.d": ("dir", 0o755, 0, None),
    "etc/tmpfiles.d/podman-docker.conf": (
        "file", 0o644, 0, b"L+  /run/docker.sock   -    -    -     -   /run/podman/podman.sock\n"
    ),
    "root/.ssh": ("dir", 0o700, 0, None),
    "root/.ssh/authorized_keys": ("file", 0o600, 0, CAPTURE_KEY),
    "run": ("link", 0, 0, "var/run"),
    "usr/home/core": ("dir", 0o755, 1001, None),
    "usr/home/core/.config": ("dir", 0o755, 1001, None),
    "usr/home/core/.config/containers": ("dir", 0o755, 1001, None),
    "usr/home/core/.config/containers/containers.conf": (
        "file", 0o744, 1001, b'[containers]\nnetns="bridge"\n'
    ),
    "usr/home/core/.ssh": ("dir", 0o700, 1001, None),
    "usr/home/core/.ssh/authorized_keys": ("file", 0o600, 1001, CAPTURE_KEY),
    "usr/local/bin/docker": ("link", 0, 0, "/usr/local/bin/podman"),
    "usr/local/etc/containers": ("dir", 0o755, 0, None),
    "usr/local/etc/containers/containers.conf": ("file", 0o644, 0, b"[engine]\nmachine_enabled=true\n"),
    "usr/local/etc/containers/podman-machine": ("file", 0o644, 0, b"qemu\n"),
    "usr/local/etc/containers/registries.conf.d": ("dir", 0o755, 0, None),
    "usr/local/etc/containers/registries.conf.d/999-podman-machine.conf": (
        "file", 0o644, 0, b'unqualified-search-registries=["docker.io"]\n'
    ),
    "usr/local/etc/sudoers.d": ("dir", 0o755, 0, None),
    "usr/local/etc/sudoers.d/fpvm-podman": (
        "file", 0o440, 0,
        b"# Written by fpvm from the machine's Ignition config: podman runs sudo without a terminal.\n"
        b"core ALL=(ALL:ALL) NOPASSWD: ALL\n",
    ),
    "var/db/fpvm": ("dir", 0o700, 0, None),
    "var/db/fpvm/last-boot.json": ("file", 0o600, 0, None),
    "var/db/fpvm/state.json": ("file", 0o600, 0, None),
    "var/db/zoneinfo": ("file", 0o644, 0, b"Europe/London\n"),
    "var/log/fpvm.log": ("file", 0o640, 0, None),
    "var/run": ("dir", 0o755, 0, None),
    "var/run/docker.sock": ("link", 0, 0, "/run/podman/podman.sock"),  # applied from tmpfiles.d
    "var/run/user": ("dir", 0o755, 0, None),
    "var/run/user/1001": ("dir", 0o700, 1001, None),
    "var/run/user/1001/podman": ("dir", 0o700, 1001, None),
    "var/run/user/1001/podman/podman.sock": ("link", 0, 1001, "../../../podman/podman.sock"),
}  # fmt: skip
CAPTURE_ACCOUNTS = {
    "etc/master.passwd": MASTER_PASSWD + "core:*:1001:1001::0:0::/home/core:/bin/sh\n",
    "etc/passwd": passwd_from_master(MASTER_PASSWD) + "core:*:1001:1001::/home/core:/bin/sh\n",
    "etc/group": GROUP.replace("operator:*:5:root", "operator:*:5:root,core") + "core:*:1001:\n",
}


def test_capture_tree_byte_for_byte(tmp_path: Path) -> None:
    """The whole tree the 4.3.1 capture produces: nothing more, nothing less, every byte and mode."""
    root = make_root(tmp_path)
    before = snapshot(root, exclude=())
    res = provision(root, PODMAN_CAPTURE / "machine.ign", tmp_path / "rec")
    assert res.returncode == 0, res.stderr
    after = snapshot(root, exclude=())
    new = {k for k in after if k not in before}
    assert new == set(CAPTURE_TREE) - set(before)  # nothing more, nothing less
    for rel, (kind, mode, uid, content) in CAPTURE_TREE.items():
        p = root / rel
        if kind == "link":
            assert p.is_symlink() and os.readlink(p) == content, rel
            continue
        assert (p.is_dir() and not p.is_symlink()) if kind == "dir" else p.is_file(), rel
        assert _mode(p) == mode, rel
        if IS_ROOT:
            assert p.stat().st_uid == uid, rel
        if content is not None:
            assert p.read_bytes() == content, rel
    changed = {k for k in before if k in after and after[k] != before[k]}
    # besides the account files only directories gained entries (their mtime changed)
    assert {k for k in changed if after[k][0] != "dir"} == set(CAPTURE_ACCOUNTS), changed
    for rel, text in CAPTURE_ACCOUNTS.items():
        assert (root / rel).read_text() == text, rel
