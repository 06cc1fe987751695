"""Users and groups: pw argv per pw(8), staged account files, clashes, sudo, keys merge."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from guest_support import make_root
from guest_synopsis import check_pw_argv

from fpvm.guest.context import make_context
from fpvm.guest.passwd import Accounts, UserAction, check_name, map_groups
from fpvm.guest.plan import PlanError, PlanOptions, build_plan
from fpvm.guest.sshkeys import AuthorizedKeys, merge_keys
from fpvm.ignition.model import Config, Passwd, PasswdGroup, PasswdUser

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIY13ql7ogiegYHHFbAKgAnlG//v6FRNqeCt518RJC8p user@host"


def _apply(root: Path, config: Config) -> list[list[str]]:
    ctx = make_context(str(root), record=str(root.parent / "rec.jsonl"))
    for action in build_plan(config, PlanOptions(root=ctx.root)):
        action.apply(ctx)
    for argv in ctx.commands:
        if argv[0] == "pw":
            check_pw_argv(argv, str(root))
    return ctx.commands


def _users(*users: PasswdUser, groups: list[PasswdGroup] | None = None) -> Config:
    return Config(passwd=Passwd(users=list(users), groups=groups or []))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path)


def test_username_variant_maps_groups_and_removes_core(root: Path) -> None:
    # podman --username X: core shouldExist false, X in sudo, adm, wheel, systemd-journal
    (root / "etc/master.passwd").write_text(
        (root / "etc/master.passwd").read_text() + "core:*:1000:1000::0:0::/home/core:/bin/sh\n"
    )
    (root / "etc/group").write_text((root / "etc/group").read_text() + "core:*:1000:\n")
    cmds = _apply(
        root,
        _users(
            PasswdUser(name="core", should_exist=False),
            PasswdUser(
                name="alice",
                uid=501,
                groups=["sudo", "adm", "wheel", "systemd-journal"],
                ssh_authorized_keys=[KEY],
            ),
        ),
    )
    pw = [c for c in cmds if c[0] == "pw"]
    assert pw[0] == ["pw", "-R", str(root), "userdel", "-n", "core"]
    opts = check_pw_argv(pw[1], str(root))
    assert pw[1][3] == "useradd" and opts["-n"] == "alice" and opts["-u"] == "501"
    assert opts["-G"] == "wheel,operator"
    acc = Accounts.load(make_context(str(root)).root)
    assert acc.user("core") is None
    assert "alice" in acc.group("wheel").members and "alice" in acc.group("operator").members  # type: ignore[union-attr]
    assert (
        (root / "usr/local/etc/sudoers.d/fpvm-podman")
        .read_text()
        .endswith("alice ALL=(ALL:ALL) NOPASSWD: ALL\n")
    )


def test_map_groups() -> None:
    assert map_groups(["sudo", "adm", "wheel", "systemd-journal"]) == (
        ["wheel", "operator"],
        ["sudo", "adm", "systemd-journal"],
    )
    assert map_groups(["video"]) == (["video"], [])


def test_password_hash_set_via_stdin_and_unlock(root: Path) -> None:
    master = root / "etc/master.passwd"
    master.write_text(master.read_text() + "bob:*LOCKED**:1001:1001::0:0::/home/bob:/bin/sh\n")
    (root / "etc/group").write_text((root / "etc/group").read_text() + "bob:*:1001:\n")
    ctx = make_context(str(root), record=str(root.parent / "rec.jsonl"))
    UserAction("bob").apply(ctx)  # locked account named in the config: unlocked (OpenSSH refuses keys)
    assert ctx.commands[-1] == ["pw", "-R", str(root), "unlock", "-n", "bob"]
    assert "bob:*:1001" in master.read_text()
    UserAction("bob", password_hash="$6$salt$hash").apply(ctx)
    assert ctx.commands[-1] == ["pw", "-R", str(root), "usermod", "-n", "bob", "-H", "0"]
    rec = (root.parent / "rec.jsonl").read_text().splitlines()[-1]
    assert '"input": "$6$salt$hash"' in rec  # the hash goes through fd 0, never argv
    assert "bob:$6$salt$hash:1001" in master.read_text()
    n = len(ctx.commands)
    assert not UserAction("bob", password_hash="$6$salt$hash").apply(ctx)
    assert len(ctx.commands) == n


def test_new_user_with_hash_uses_H0(root: Path) -> None:
    cmds = _apply(root, _users(PasswdUser(name="carol", password_hash="$6$x$y")))
    assert cmds[0][-2:] == ["-H", "0"] and "-w" not in cmds[0]


@pytest.mark.parametrize("uid", [0, 2])
def test_uid_clash_with_existing_account(root: Path, uid: int) -> None:
    """uid 0 (podman run as root) or a system uid: pw allocates a free uid, with a warning."""
    ctx = make_context(str(root), record=str(root.parent / "rec.jsonl"))
    action = UserAction("core", uid=uid)
    assert action.apply(ctx)
    opts = check_pw_argv(ctx.commands[0], str(root))
    assert "-u" not in opts
    assert any("already belongs to" in line for line in ctx.log.lines)
    core = Accounts.load(ctx.root).user("core")
    assert core is not None and core.uid == 1000
    assert Accounts.load(ctx.root).user("root").uid == 0  # type: ignore[union-attr]


def test_existing_user_changed_only_where_needed(root: Path) -> None:
    master = root / "etc/master.passwd"
    master.write_text(master.read_text() + "core:*:1000:1000::0:0::/home/core:/bin/sh\n")
    (root / "etc/group").write_text((root / "etc/group").read_text() + "core:*:1000:\n")
    ctx = make_context(str(root), record=str(root.parent / "rec.jsonl"))
    assert UserAction("core", uid=501, groups=["wheel"]).apply(ctx)
    assert ctx.commands == [["pw", "-R", str(root), "usermod", "-n", "core", "-u", "501", "-G", "wheel"]]
    assert not UserAction("core", uid=501, groups=["wheel"]).apply(ctx)
    assert len(ctx.commands) == 1


@pytest.mark.parametrize("name", ["bad name", "-dash", "a:b", "x" * 33, "é", "comma,", "a$b", "tab\t", ""])
def test_names_pw_would_reject_are_invalid_config(root: Path, name: str) -> None:
    assert check_name(name) is not None
    with pytest.raises(PlanError, match=r"\$\.passwd\.users\[0\]\.name"):
        build_plan(_users(PasswdUser(name=name)))


def test_accepted_names() -> None:
    # pw_checkname() refuses only " ,\t:+&#%$^()!@~*?<>=|\\/\"", a leading '-', 8-bit and control chars
    for name in ("core", "podman_user", "a.b-c", "machine$", "Core1", "semi;colon"):
        assert check_name(name) is None


def test_sudo_only_for_names_sudoers_reads_plainly(root: Path) -> None:
    cmds = _apply(root, _users(PasswdUser(name="core"), PasswdUser(name="o'neil", groups=["sudo"])))
    assert [c[5] for c in cmds if c[3] == "useradd"] == ["core", "o'neil"]
    text = (root / "usr/local/etc/sudoers.d/fpvm-podman").read_text()
    assert "o'neil" not in text and "core ALL=" in text


def test_gecos_with_colon_is_invalid() -> None:
    with pytest.raises(PlanError, match="gecos"):
        build_plan(_users(PasswdUser(name="core", gecos="a:b")))


def test_groups_created_with_gid(root: Path) -> None:
    cmds = _apply(root, _users(groups=[PasswdGroup(name="podman", gid=990)]))
    assert cmds == [["pw", "-R", str(root), "groupadd", "-n", "podman", "-g", "990"]]
    assert "podman:*:990:" in (root / "etc/group").read_text()
    assert _apply(root, _users(groups=[PasswdGroup(name="podman", gid=990)])) == []


def test_merge_keys_keeps_existing_and_dedups() -> None:
    assert merge_keys("ssh-rsa AAA old\n", [KEY, "ssh-rsa AAA old", KEY]) == f"ssh-rsa AAA old\n{KEY}\n"
    assert merge_keys("", []) == ""


def test_authorized_keys_merged_into_existing_file(root: Path) -> None:
    ssh = root / "root/.ssh"
    ssh.mkdir(mode=0o755)
    (ssh / "authorized_keys").write_text("ssh-rsa AAAAB3 admin@elsewhere\n")
    ctx = make_context(str(root))
    assert AuthorizedKeys("root", [KEY]).apply(ctx)
    assert (ssh / "authorized_keys").read_text() == f"ssh-rsa AAAAB3 admin@elsewhere\n{KEY}\n"
    assert (ssh.stat().st_mode & 0o777) == 0o700  # tightened for StrictModes
    assert not AuthorizedKeys("root", [KEY]).apply(ctx)


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root")
def test_existing_home_with_other_owner_is_left_alone(root: Path) -> None:
    """Documented: an existing home owned by someone else keeps its owner; .ssh is the user's."""
    home = root / "usr/home/core"
    home.mkdir()
    os.chown(home, 4242, 4242)
    cmds = _apply(root, _users(PasswdUser(name="core", uid=501, ssh_authorized_keys=[KEY])))
    assert cmds[0][3] == "useradd"
    assert home.stat().st_uid == 4242
    assert (home / ".ssh").stat().st_uid == 501
    assert (home / ".ssh/authorized_keys").stat().st_uid == 501
    ctx = make_context(str(root))
    AuthorizedKeys("core", [KEY]).apply(ctx)
    assert any("belongs to uid 4242" in line for line in ctx.log.lines)


def test_sudoers_checked_by_visudo(root: Path) -> None:
    _apply(root, _users(PasswdUser(name="core", uid=501), PasswdUser(name="dev", groups=["sudo"])))
    path = root / "usr/local/etc/sudoers.d/fpvm-podman"
    visudo = shutil.which("visudo") or "/usr/sbin/visudo"
    res = subprocess.run([visudo, "-cf", str(path)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert path.read_text().splitlines()[1:] == [
        "core ALL=(ALL:ALL) NOPASSWD: ALL",
        "dev ALL=(ALL:ALL) NOPASSWD: ALL",
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root")
def test_uid_change_moves_the_home_tree(root: Path) -> None:
    """An image with podman's user at another uid: after `pw usermod -u`, sshd must still trust ~/.ssh."""
    master = root / "etc/master.passwd"
    master.write_text(master.read_text() + "core:*:1000:1000::0:0::/home/core:/bin/sh\n")
    (root / "etc/group").write_text((root / "etc/group").read_text() + "core:*:1000:\n")
    home = root / "usr/home/core"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh/authorized_keys").write_text("ssh-rsa AAAA old\n")
    (home / "link").symlink_to("/etc")
    (home / "other").write_text("x")
    for p in (home, home / ".ssh", home / ".ssh/authorized_keys"):
        os.chown(p, 1000, 1000)
    os.lchown(home / "link", 1000, 1000)
    os.chown(home / "other", 4242, 4242)  # someone else's file stays theirs
    cmds = _apply(root, _users(PasswdUser(name="core", uid=501, ssh_authorized_keys=[KEY])))
    assert cmds[0] == ["pw", "-R", str(root), "usermod", "-n", "core", "-u", "501"]
    for p in (home, home / ".ssh", home / ".ssh/authorized_keys", home / "link"):
        assert p.lstat().st_uid == 501, p
    assert (home / "other").stat().st_uid == 4242
    assert (home / ".ssh/authorized_keys").read_text() == f"ssh-rsa AAAA old\n{KEY}\n"


def test_negative_uid_is_invalid() -> None:
    with pytest.raises(PlanError, match=r"\$\.passwd\.users\[0\]\.uid"):
        build_plan(_users(PasswdUser(name="core", uid=-1)))


def test_username_without_groups_still_gets_sudo(root: Path) -> None:
    """podman 4.8 `--username bob`: bob has the uid and key but no groups; podman still runs sudo as bob."""
    _apply(root, _users(PasswdUser(name="bob", uid=501, ssh_authorized_keys=[KEY]), PasswdUser(name="root")))
    text = (root / "usr/local/etc/sudoers.d/fpvm-podman").read_text()
    assert text.splitlines()[1:] == ["bob ALL=(ALL:ALL) NOPASSWD: ALL"]
