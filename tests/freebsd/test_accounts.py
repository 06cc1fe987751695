"""Accounts, keys and sudo as the agent left them on a live guest (pw(8), passwd(5), sudo(8), sshd(8))."""

from __future__ import annotations

import json
from typing import Any

from freebsd_target import Target


def _users(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [u for u in config.get("passwd", {}).get("users", []) if u.get("shouldExist") is not False]


def test_every_config_user_exists_in_master_passwd_and_pwd_db(target: Target, config: dict[str, Any]) -> None:
    """pw(8) updated master.passwd and pwd_mkdb(8) the databases: `pw usershow` and `id` agree."""
    for user in _users(config):
        name = user["name"]
        line = target.check(f"grep '^{name}:' /etc/master.passwd").strip()
        fields = line.split(":")
        if "uid" in user:
            assert fields[2] == str(user["uid"])
        assert target.check(f"pw usershow -n {name}").split(":")[0] == name
        assert target.check(f"id -u {name}").strip() == fields[2]
        if name != "root" and not user.get("passwordHash"):
            assert fields[1] == "*", "no hash: `*` (key logins only, not locked)"


def test_homes_owned_by_their_users(target: Target, config: dict[str, Any]) -> None:
    for user in _users(config):
        if user["name"] == "root" or user.get("noCreateHome"):
            continue
        home = target.check(f"pw usershow -n {user['name']}").split(":")[8]
        owner = target.check(f"stat -L -f '%Su' {home}").strip()
        assert owner == user["name"], f"{home} is owned by {owner}"


def test_machine_user_is_in_wheel_and_operator(target: Target, machine_user: str) -> None:
    groups = target.check(f"id -Gn {machine_user}").split()
    assert "wheel" in groups and "operator" in groups, groups


def test_authorized_keys_modes_satisfy_strictmodes(target: Target, config: dict[str, Any]) -> None:
    for user in _users(config):
        if not user.get("sshAuthorizedKeys"):
            continue
        home = target.check(f"pw usershow -n {user['name']}").split(":")[8]
        mode = target.check(f"stat -f '%Lp %Su' {home}/.ssh {home}/.ssh/authorized_keys").split("\n")
        assert mode[0].split()[0] == "700" and mode[1].split()[0] == "600", mode
        keys = target.read(f"{home}/.ssh/authorized_keys").decode()
        for key in user["sshAuthorizedKeys"]:
            assert key.strip() in keys


def test_sudo_without_password_or_terminal(target: Target, machine_user: str) -> None:
    """The port's sudo reads /usr/local/etc/sudoers.d/fpvm-podman: `sudo -n true` as the machine user."""
    target.check(f"su -m {machine_user} -c 'sudo -n true' </dev/null")


def test_sudo_path_puts_linux_compat_first(target: Target, machine_user: str) -> None:
    """Through sudo, podman's `mount`, `chattr`, `systemctl`, `systemd-tmpfiles` are fpvm's launchers."""
    for cmd in ("mount", "chattr", "systemctl", "systemd-tmpfiles"):
        found = target.check(f"su -m {machine_user} -c 'sudo -n sh -c \"command -v {cmd}\"' </dev/null")
        assert found.strip() == f"/usr/local/libexec/fpvm/linux-compat/{cmd}"


def test_second_provision_runs_no_pw_and_changes_nothing(target: Target) -> None:
    """A second provision of the same config on the live system changes nothing (recorded, not run)."""
    target.check("fpvm debug fwcfg get opt/com.coreos/config > /tmp/fpvm-check.ign")
    res = target.run(
        "fpvm guest provision --root / --config /tmp/fpvm-check.ign --no-ready --record /tmp/fpvm-check.rec"
    )
    assert res.status == 0, res.text + res.stderr.decode(errors="replace")
    recorded = [json.loads(line) for line in target.read("/tmp/fpvm-check.rec").decode().split("\n") if line]
    assert [r for r in recorded if r["argv"][0].endswith("/pw")] == []
    report = json.loads(target.read("/var/db/fpvm/last-boot.json"))
    assert [a for a in report["actions"] if a.get("changed")] == []


def test_base_accounts_keep_uid_home_and_keys(target: Target) -> None:
    """FreeBSD's own accounts share /root and uid 0: the agent never renumbers, moves or keys them."""
    for name, uid, home in (("root", "0", "/root"), ("toor", "0", "/root"), ("daemon", "1", "/root")):
        fields = target.check(f"pw usershow -n {name}").strip().split(":")
        assert (fields[2], fields[8]) == (uid, home), fields
    owner = target.check("stat -f '%Su %Lp' /root/.ssh").split()
    assert owner == ["root", "700"], owner
