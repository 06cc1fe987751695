"""Security regressions (issue 16): code injection at boot, home escapes, shared homes, odd fields.

Real peers: Debian's ``/bin/sh`` (dash) sources what the agent writes, exactly as rc.subr and
/etc/profile do on FreeBSD; ``sh -n`` checks the syntax; recorded ``pw`` commands are checked against
pw(8)'s synopsis. Every test here failed on the code before the fix.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from guest_support import make_root
from guest_synopsis import check_pw_argv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpvm.guest import proxy, rcconf
from fpvm.guest.accountdb import AccountDB
from fpvm.guest.context import ApplyContext, make_context
from fpvm.guest.passwd import UserAction
from fpvm.guest.plan import PlanError, PlanOptions, build_plan
from fpvm.guest.rootfs import RootFS
from fpvm.guest.sshkeys import merge_keys
from fpvm.ignition.model import Config, Passwd, PasswdUser

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIY13ql7ogiegYHHFbAKgAnlG//v6FRNqeCt518RJC8p user@host"
# Every character str.splitlines() splits at besides \n and \r.
ODD_BREAKS = ["\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def sh(script: str, *args: str, cwd: Path) -> bytes:
    res = subprocess.run(["/bin/sh", "-c", script, "sh", *args], capture_output=True, cwd=cwd, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def sh_syntax_ok(path: Path) -> None:
    res = subprocess.run(["/bin/sh", "-n", str(path)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def _ctx(root: Path) -> ApplyContext:
    return make_context(str(root), record=str(root.parent / "rec.jsonl"))


def _apply(root: Path, config: Config) -> ApplyContext:
    ctx = _ctx(root)
    for action in build_plan(config, PlanOptions(root=ctx.root)):
        action.apply(ctx)
    for argv in ctx.commands:
        if argv[0] == "pw":
            check_pw_argv(argv, str(root))
    return ctx


def _users(*users: PasswdUser) -> Config:
    return Config(passwd=Passwd(users=list(users)))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path)


# -- 1. code injection through rc.conf.d and profile.d ------------------------------------------------
@pytest.mark.parametrize("brk", ODD_BREAKS)
def test_proxy_value_with_line_break_never_runs_at_boot(tmp_path: Path, brk: str) -> None:
    """Two boots with ``http://x<brk>touch PWNED #``: the value is refused, sourcing runs nothing."""
    root = tmp_path / "root"
    root.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = {"http_proxy": f"http://x{brk}touch PWNED #", "SSL_CERT_FILE": f"/etc/c.pem{brk}touch PWNED2 #"}
    conf = root / "etc/rc.conf.d/podman_service"
    conf.parent.mkdir(parents=True)
    conf.write_text('podman_service_enable="YES"\n')
    for _ in range(2):  # the injection needed a re-read of the file the first boot wrote
        ctx = make_context(str(root))
        proxy.ProxyEnvAction(env, source="fw_cfg").apply(ctx)
        sh_syntax_ok(conf)
        sh('. "$1"; _env="$podman_service_env"; eval "export -- $_env"', str(conf), cwd=work)
        assert list(work.iterdir()) == []  # no PWNED marker
    warnings = [line for line in ctx.log.lines if " WARN " in line]
    assert any("opt/com.coreos/environment (fw_cfg): value of http_proxy" in w for w in warnings)
    assert any("value of SSL_CERT_FILE" in w for w in warnings)
    assert conf.read_text() == 'podman_service_enable="YES"\n'
    assert list(work.iterdir()) == []


def test_proxy_shim_path_warns_on_stderr_and_names_the_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy.apply_proxy_env(RootFS(tmp_path), {"HTTPS_PROXY": "http://p\u2028x", "no_proxy": "localhost"})
    err = capsys.readouterr().err
    assert "/etc/environment.d/default-env.conf: value of HTTPS_PROXY contains control characters" in err
    text = (tmp_path / "etc/rc.conf.d/podman_service").read_text()
    assert "no_proxy" in text and "HTTPS_PROXY" not in text and "https_proxy" not in text


def test_rc_file_written_before_with_a_vertical_tab_is_repaired(tmp_path: Path) -> None:
    """A file an older agent wrote with ``\\v`` inside a value is one line to sh and to the agent."""
    conf = tmp_path / "etc/rc.conf.d/podman_service"
    conf.parent.mkdir(parents=True)
    conf.write_text("podman_service_env=\"http_proxy='http://x\vtouch PWNED #'\"\n")
    assert rcconf.set_values(RootFS(tmp_path), "podman_service", {"podman_service_env": "http_proxy='h'"})
    assert conf.read_text() == "podman_service_env=\"http_proxy='h'\"\n"


VALUES = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda pre, brk, post: pre + brk + post,
        st.sampled_from(["http://x", "'", '"', "\\", "$(", "`", "x'\"", ""]),
        st.sampled_from([*ODD_BREAKS, "\n", "\r", "\0", "\t", ";", "'", '"', "`", "$(", "\\"]),
        st.sampled_from(
            ["touch PWNED #", "touch PWNED", ")touch PWNED", "'; touch PWNED; '", "`touch PWNED`"]
        ),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=VALUES)
def test_property_rcconf_value_round_trips_or_is_refused(
    tmp_path_factory: pytest.TempPathFactory, value: str
) -> None:
    """The real writer, then the real sh: the value reads back exactly, or the writer refuses it."""
    base = tmp_path_factory.mktemp("rc")
    work = base / "work"
    work.mkdir()
    (base / "root").mkdir()
    fs = RootFS(base / "root")
    try:
        changed = rcconf.set_values(fs, "svc", {"svc_flags": value, "svc_enable": "YES"})
    except rcconf.RcConfError:
        assert any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029" for c in value)
        return
    assert changed
    conf = base / "root/etc/rc.conf.d/svc"
    sh_syntax_ok(conf)
    assert sh('. "$1"; printf %s "$svc_flags"', str(conf), cwd=work) == value.encode()
    before = conf.stat().st_mtime_ns, conf.read_bytes()
    assert rcconf.set_values(fs, "svc", {"svc_flags": value, "svc_enable": "YES"}) is False
    assert (conf.stat().st_mtime_ns, conf.read_bytes()) == before
    assert list(work.iterdir()) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=VALUES)
def test_property_proxy_value_round_trips_or_is_refused(
    tmp_path_factory: pytest.TempPathFactory, value: str
) -> None:
    """profile.d (sourced by login shells) and podman_service_env (eval'd by rc.subr) give back the value."""
    base = tmp_path_factory.mktemp("px")
    work = base / "work"
    work.mkdir()
    (base / "root").mkdir()
    fs = RootFS(base / "root")
    proxy.apply_proxy_env(fs, {"http_proxy": value, "no_proxy": "localhost"}, warn=lambda _m: None)
    profile = base / "root/usr/local/etc/profile.d/fpvm-proxy.sh"
    conf = base / "root/etc/rc.conf.d/podman_service"
    sh_syntax_ok(profile)
    sh_syntax_ok(conf)
    refused = any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029" for c in value)
    want = b"" if refused or value == "" else value.encode()
    assert sh('. "$1"; printf %s "$http_proxy"', str(profile), cwd=work) == want
    out = sh(
        '. "$1"; _env="$podman_service_env"; eval "export -- $_env"; printf %s "$HTTP_PROXY"',
        str(conf),
        cwd=work,
    )
    assert out == want
    assert (
        proxy.apply_proxy_env(fs, {"http_proxy": value, "no_proxy": "localhost"}, warn=lambda _m: None)
        is False
    )
    assert list(work.iterdir()) == []


# -- 1b. authorized_keys and account files are split at \n only ----------------------------------------
@pytest.mark.parametrize("brk", ODD_BREAKS)
def test_key_with_line_break_is_refused_by_the_plan(brk: str) -> None:
    bad = f'{KEY}{brk}command="touch /tmp/PWNED" {KEY}'
    with pytest.raises(PlanError, match=r"\$\.passwd\.users\[0\]\.sshAuthorizedKeys\[0\]"):
        build_plan(_users(PasswdUser(name="core", ssh_authorized_keys=[bad])))


@pytest.mark.parametrize("brk", ODD_BREAKS)
def test_existing_authorized_keys_line_stays_one_line(brk: str) -> None:
    existing = f"ssh-rsa AAAA old{brk}comment\n"
    once = merge_keys(existing, [KEY])
    assert once == existing + KEY + "\n"
    assert merge_keys(once, [KEY]) == once


@pytest.mark.parametrize("brk", ODD_BREAKS)
def test_gecos_and_hash_with_line_breaks_are_refused(brk: str) -> None:
    with pytest.raises(PlanError, match=r"\$\.passwd\.users\[0\]\.gecos"):
        build_plan(_users(PasswdUser(name="core", gecos=f"Core{brk}User")))
    with pytest.raises(PlanError, match=r"\$\.passwd\.users\[0\]\.passwordHash"):
        build_plan(_users(PasswdUser(name="core", password_hash=f"$6$s$h{brk}x")))
    with pytest.raises(PlanError, match=r"\$\.passwd\.users\[0\]\.shell"):
        build_plan(_users(PasswdUser(name="core", shell=f"/bin/sh{brk}")))


@pytest.mark.parametrize("brk", ODD_BREAKS)
def test_account_with_odd_character_in_its_line_is_still_found(root: Path, brk: str) -> None:
    """An account line holding U+2028 (written by hand or an older agent) is one account on re-read."""
    master = root / "etc/master.passwd"
    master.write_text(master.read_text() + f"core:*:1001:1001::0:0:Core{brk}User:/home/core:/bin/sh\n")
    (root / "etc/group").write_text((root / "etc/group").read_text() + "core:*:1001:\n")
    ctx = _ctx(root)
    assert UserAction("core").apply(ctx) is False
    assert ctx.commands == []
    acc = AccountDB.load(RootFS(root))
    assert acc.user("core") is not None and acc.user("core").gecos == f"Core{brk}User"  # type: ignore[union-attr]


# -- 2. home directories stay inside the root ---------------------------------------------------------
@pytest.mark.parametrize("home", ["/../../../tmp/x", "/home/../../tmp/x", "relative/home", "/home/./x", "/"])
def test_home_outside_the_root_is_refused_by_the_plan(home: str) -> None:
    with pytest.raises(PlanError, match=r"\$\.passwd\.users\[0\]\.homeDir"):
        build_plan(_users(PasswdUser(name="core", home_dir=home)))


def test_home_is_simplified(root: Path) -> None:
    ctx = _apply(root, _users(PasswdUser(name="core", home_dir="//home//core/")))
    useradd = next(c for c in ctx.commands if c[3] == "useradd")
    assert useradd[useradd.index("-d") + 1] == "/home/core"


def test_home_through_an_escaping_symlink_builds_no_command(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "usr/home/evil").symlink_to(outside)  # absolute: leaves the staged root
    ctx = _ctx(root)
    (action,) = [
        a for a in build_plan(_users(PasswdUser(name="core", home_dir="/home/evil/core"))) if a.kind == "user"
    ]
    with pytest.raises(ValueError, match="home directory"):
        action.apply(ctx)
    assert ctx.commands == []
    assert list(outside.iterdir()) == []


# -- 3. shared homes and base accounts -----------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root")
def test_toor_uid_change_refused_and_root_home_keeps_its_owner(root: Path) -> None:
    (root / "root/.profile").write_text("x")
    ctx = _apply(root, _users(PasswdUser(name="toor", uid=5000)))
    assert [c for c in ctx.commands if c[0] == "pw"] == []
    assert any("toor is a base system account" in line for line in ctx.log.lines)
    assert (root / "root").stat().st_uid == 0 and (root / "root/.profile").stat().st_uid == 0


def test_keys_for_daemon_refused_root_keeps_its_file(root: Path) -> None:
    ctx = _apply(root, _users(PasswdUser(name="daemon", ssh_authorized_keys=[KEY])))
    assert not (root / "root/.ssh").exists()
    assert any("daemon is a base system account" in line for line in ctx.log.lines)
    # root's own keys still work (root shares /root with toor and daemon)
    _apply(root, _users(PasswdUser(name="root", ssh_authorized_keys=[KEY])))
    assert (root / "root/.ssh/authorized_keys").read_text() == KEY + "\n"


def test_new_user_sharing_roots_home_gets_no_keys_and_no_m(root: Path) -> None:
    ctx = _apply(root, _users(PasswdUser(name="bob", home_dir="/root", ssh_authorized_keys=[KEY])))
    useradd = next(c for c in ctx.commands if c[3] == "useradd")
    assert "-m" not in check_pw_argv(useradd, str(root))
    assert not (root / "root/.ssh").exists()
    assert any("home /root of bob is also root's" in line for line in ctx.log.lines)


def test_base_accounts_are_not_removed(root: Path) -> None:
    ctx = _apply(
        root,
        _users(PasswdUser(name="root", should_exist=False), PasswdUser(name="daemon", should_exist=False)),
    )
    assert [c for c in ctx.commands if c[0] == "pw"] == []
    assert AccountDB.load(RootFS(root)).user("root") is not None


def test_podman_user_with_low_uid_keeps_working_across_runs(root: Path) -> None:
    """macOS's uid 501: the second run (its own context, state saved) still manages keys and uid."""
    cfg = _users(PasswdUser(name="core", uid=501, ssh_authorized_keys=[KEY]))
    ctx = _apply(root, cfg)
    ctx.state.save(ctx.root)
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHzlwO8RLyd8T6XgYEm/bgWv8MVxcE1TofpNViKKsF2b other"
    ctx = _apply(root, _users(PasswdUser(name="core", uid=501, ssh_authorized_keys=[KEY, other])))
    assert [c for c in ctx.commands if c[0] == "pw"] == []
    assert (root / "usr/home/core/.ssh/authorized_keys").read_text() == f"{KEY}\n{other}\n"
    assert "core" not in ctx.state.get("base_accounts")


# -- 5. shells -------------------------------------------------------------------------------------------
def _useradd_shell(ctx: ApplyContext) -> str:
    useradd = next(c for c in ctx.commands if c[3] == "useradd")
    return useradd[useradd.index("-s") + 1]


@pytest.mark.parametrize(
    "shell", ["/bin/sh; rm -rf /", "/usr/local/bin/", "bash", "/nonexistent/zsh", "/etc"]
)
def test_odd_shell_falls_back_to_bin_sh_with_a_warning(root: Path, shell: str) -> None:
    ctx = _apply(root, _users(PasswdUser(name="core", shell=shell)))
    assert _useradd_shell(ctx) == "/bin/sh"
    assert any("not an executable in the root; using /bin/sh" in line for line in ctx.log.lines)


def test_empty_shell_means_default(root: Path) -> None:
    ctx = _apply(root, _users(PasswdUser(name="core", shell="")))
    assert _useradd_shell(ctx) == "/bin/sh"
    assert AccountDB.load(RootFS(root)).user("core") is not None


def test_linux_shell_maps_to_usr_local_bin_only_when_executable(root: Path) -> None:
    bash = root / "usr/local/bin/bash"
    bash.write_text("#!/bin/sh\n")
    bash.chmod(0o644)
    ctx = _apply(root, _users(PasswdUser(name="a", shell="/bin/bash")))
    assert _useradd_shell(ctx) == "/bin/sh"  # not executable: no login would work
    bash.chmod(0o755)
    ctx = _apply(root, _users(PasswdUser(name="b", shell="/bin/bash")))
    assert _useradd_shell(ctx) == "/usr/local/bin/bash"


# -- 4. scale: one read, one write ---------------------------------------------------------------------
def test_many_users_write_the_account_files_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[str] = []
    real = RootFS.write

    def counting(self: RootFS, path: str, *args: object, **kw: object) -> bool:
        writes.append(path)
        return real(self, path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(RootFS, "write", counting)
    loads: list[int] = []
    real_load = AccountDB.load.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(AccountDB, "load", classmethod(lambda cls, r: loads.append(1) or real_load(cls, r)))
    users = [PasswdUser(name=f"u{i}", groups=["wheel"], ssh_authorized_keys=[KEY]) for i in range(60)]
    _apply(root, _users(*users))
    assert writes.count("/etc/master.passwd") == 1
    assert writes.count("/etc/group") == 1
    assert len(loads) == 1
    text = (root / "etc/group").read_text()
    assert "wheel:*:0:root," + ",".join(f"u{i}" for i in range(60)) + "\n" in text


class _LiveRunner:
    """A non-recording runner (the live path) that does what pw would, for the allocated ids only."""

    recording = False

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, argv: list[str], *, input: bytes | None = None, check: bool = True) -> object:
        from fpvm.guest.runner import Result

        if argv[3] == "useradd":
            name = argv[argv.index("-n") + 1]
            uid = 2000 + int(name[1:])
            with open(self.root / "etc/master.passwd", "a") as fh:
                fh.write(f"{name}:*:{uid}:{uid}::0:0::/home/{name}:/bin/sh\n")
            with open(self.root / "etc/group", "a") as fh:
                fh.write(f"{name}:*:{uid}:\n")
        return Result(0)

    def available(self, name: str) -> bool:
        return True


def test_live_path_reads_the_files_once_more_only_when_a_chosen_id_is_needed(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[int] = []
    real_load = AccountDB.load.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(AccountDB, "load", classmethod(lambda cls, r: loads.append(1) or real_load(cls, r)))
    ctx = make_context(str(root), runner=_LiveRunner(root))  # type: ignore[arg-type]
    users = [PasswdUser(name=f"u{i}", ssh_authorized_keys=[KEY]) for i in range(40)]
    for action in build_plan(_users(*users), PlanOptions(root=ctx.root)):
        action.apply(ctx)
    assert len(loads) == 2  # once at the start, once when the first key needs a uid pw chose
    assert len([c for c in ctx.commands if c[3] == "useradd"]) == 40
    assert (root / "etc/master.passwd").read_text().count("\nu39:") == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gecos=VALUES, pw_hash=st.sampled_from(["$6$s$h", "$6$s$h\vx", "*", "$2b$x\u2028"]))
def test_property_account_fields_round_trip_or_are_refused(
    tmp_path_factory: pytest.TempPathFactory, gecos: str, pw_hash: str
) -> None:
    """The real account writer, then a re-read: the same account, and a second run records nothing."""
    root = make_root(tmp_path_factory.mktemp("acc"))
    cfg = _users(PasswdUser(name="core", gecos=gecos, password_hash=pw_hash, ssh_authorized_keys=[KEY]))
    try:
        _apply(root, cfg)
    except PlanError as exc:
        assert any(
            p[0] in ("$.passwd.users[0].gecos", "$.passwd.users[0].passwordHash") for p in exc.problems
        )
        assert ":" in gecos or any(
            ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029" for c in gecos + pw_hash
        )
        return
    core = AccountDB.load(RootFS(root)).user("core")
    assert core is not None and (core.gecos, core.password) == (gecos, pw_hash)
    assert len(AccountDB.load(RootFS(root)).users) == 6  # FreeBSD's five, and core: no line split
    ctx = _apply(root, cfg)
    assert ctx.commands == []
