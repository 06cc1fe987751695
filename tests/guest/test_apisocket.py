"""The API socket at the paths podman's host side uses, checked with a real listening unix socket."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from fpvm.guest import apisocket
from fpvm.guest.context import make_context
from fpvm.guest.runner import read_record
from fpvm.ignition.model import Config, Passwd, PasswdUser

MASTER = (
    "root:$6$x:0:0::0:0:Charlie &:/root:/bin/sh\n"
    "operator:*:2:5::0:0:System &:/:/usr/sbin/nologin\n"
    "core:*:1001:1001::0:0:core:/home/core:/bin/sh\n"
)
GROUP = "wheel:*:0:root\noperator:*:5:root\ncore:*:1001:\n"


def staged_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/master.passwd").write_text(MASTER)
    (root / "etc/passwd").write_text(
        "".join(
            ":".join([f[0], "*", *f[2:4], *f[7:]]) + "\n"
            for f in (ln.split(":") for ln in MASTER.splitlines())
        )
    )
    (root / "etc/group").write_text(GROUP)
    (root / "var/run").mkdir(parents=True)
    return root


def config(uid: int | None = 501) -> Config:
    # podman's user "core" with the host's uid (501 on macOS); the account may have another uid.
    users = [
        PasswdUser(name="core", uid=uid),
        PasswdUser(name="root"),
        PasswdUser(name="gone", uid=1234, should_exist=False),
    ]
    return Config(passwd=Passwd(users=users))


def apply(root: Path, record: Path) -> bool:
    ctx = make_context(str(root), record=str(record))
    changed = False
    for action in apisocket.plan_api_socket(apisocket.podman_users(config())):
        changed |= action.apply(ctx)
    return changed


def test_links_group_and_second_run(tmp_path: Path) -> None:
    root = staged_root(tmp_path)
    record = tmp_path / "rec.jsonl"
    assert apply(root, record)
    assert os.readlink(root / "run") == "var/run"
    link = root / "var/run/user/501/podman/podman.sock"
    assert os.readlink(link) == "../../../podman/podman.sock"
    assert os.path.realpath(link) == str(root / "var/run/podman/podman.sock")
    # pw(8): pw [-R rootdir] groupmod -n name -m newmembers  (adds, -M would replace)
    assert read_record(record) == [["pw", "-R", str(root), "groupmod", "-n", "operator", "-m", "core"]]
    assert "operator:*:5:root,core\n" in (root / "etc/group").read_text()
    if os.geteuid() == 0:
        for d in ("var/run/user/501", "var/run/user/501/podman"):
            st = os.stat(root / d)
            assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1001, 1001, 0o700)
        assert os.lstat(link).st_uid == 1001
    # Second run: nothing to do, nothing recorded.
    assert not apply(root, record)
    assert len(read_record(record)) == 1


def test_paths_reach_a_listening_socket(tmp_path: Path) -> None:
    root = staged_root(tmp_path)
    apply(root, tmp_path / "rec")
    (root / "var/run/podman").mkdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(root / "var/run/podman/podman.sock"))
        server.listen(2)
        for path in ("run/podman/podman.sock", "var/run/user/501/podman/podman.sock"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(str(root / path))
                conn, _ = server.accept()
                client.sendall(b"GET /_ping")
                assert conn.recv(16) == b"GET /_ping"
                conn.close()
    finally:
        server.close()


def test_run_directory_gets_a_socket_link(tmp_path: Path) -> None:
    root = staged_root(tmp_path)
    (root / "run").mkdir()
    ctx = make_context(str(root), record=str(tmp_path / "rec"))
    assert apisocket.RunLinkAction().apply(ctx)
    assert os.readlink(root / "run/podman/podman.sock") == "../../var/run/podman/podman.sock"
    assert ctx.log.warnings == 1
    assert not apisocket.RunLinkAction().apply(ctx)


def test_absolute_run_link_is_accepted(tmp_path: Path) -> None:
    root = staged_root(tmp_path)
    (root / "run").symlink_to("/var/run")
    ctx = make_context(str(root), record=str(tmp_path / "rec"))
    assert not apisocket.RunLinkAction().apply(ctx)


def test_missing_user_or_group_is_a_warning(tmp_path: Path) -> None:
    root = staged_root(tmp_path)
    (root / "etc/group").write_text("wheel:*:0:root\n")
    ctx = make_context(str(root), record=str(tmp_path / "rec"))
    assert not apisocket.ApiGroupAction("core").apply(ctx)
    assert not apisocket.UserSocketAction("nobody-here", 42).apply(ctx)
    assert ctx.log.warnings == 2
    assert ctx.commands == []


@pytest.mark.parametrize(("uid", "expected"), [(None, 1001), (0, 0)])
def test_uid_from_account_when_config_has_none(tmp_path: Path, uid: int | None, expected: int) -> None:
    root = staged_root(tmp_path)
    ctx = make_context(str(root), record=str(tmp_path / "rec"))
    apisocket.UserSocketAction("core", uid).apply(ctx)
    assert (root / f"var/run/user/{expected}/podman/podman.sock").is_symlink()


def test_podman_users() -> None:
    assert apisocket.podman_users(config()) == [("core", 501, "$.passwd.users[0]")]
    assert apisocket.podman_users(Config()) == []


def test_api_group_follows_podman_service_api_group(tmp_path: Path) -> None:
    root = staged_root(tmp_path)
    conf = root / "etc/rc.conf.d/podman_service"
    conf.parent.mkdir(parents=True)
    conf.write_text('podman_service_enable="YES"\npodman_service_api_group="wheel"\n')
    record = tmp_path / "rec"
    ctx = make_context(str(root), record=str(record))
    action = apisocket.ApiGroupAction("core")
    assert "podman_service_api_group" in action.describe()
    assert action.apply(ctx)
    assert read_record(record) == [["pw", "-R", str(root), "groupmod", "-n", "wheel", "-m", "core"]]
    assert "wheel:*:0:root,core\n" in (root / "etc/group").read_text()
    # A user whose primary group is the API group needs nothing.
    assert not apisocket.ApiGroupAction("core", group="core").apply(
        make_context(str(root), record=str(record))
    )
