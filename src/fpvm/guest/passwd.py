"""User and group actions: plan ``pw`` commands, keep the account database in step with them.

The account files themselves (reading, indexing, writing) are ``fpvm.guest.accountdb``'s job.

FreeBSD keeps accounts in ``/etc/master.passwd`` (with hashes), the derived ``/etc/passwd``, the
``pwd.db``/``spwd.db`` databases, and ``/etc/group``. Only ``pw(8)`` should change them on a live
system, so every change here is a ``pw -R ROOT ...`` command through the runner, in the argument form
of pw(8)'s SYNOPSIS (the guest tests check every recorded command against it).

When commands are only recorded (tests, image staging off FreeBSD) nothing would create the account,
yet later steps need it (``chown`` to the new uid, the home directory for ``authorized_keys``). The
agent then writes the text files ``master.passwd``, ``passwd`` and ``group`` itself the way pw would
leave them (not the ``.db`` files: ``pwd_mkdb`` is FreeBSD-only, see docs/freebsd-checklist.md) and
creates the home directory owned by the user. A second run therefore finds the account and records
nothing. The account actions of one plan share a ``Batch``: the files are written once, after the
last of them, so provisioning N users costs time linear in N.

Protected accounts: the base system's accounts share things: toor has uid 0 and /root, daemon's
home is /root. They are the accounts the agent finds the first time it reads the root (remembered in
its state) with a system uid (below 1000, or nobody/nogroup's 65533-65535) and a home outside /home
(FreeBSD's own accounts live in /root, /, /var/..., /nonexistent; podman's user, whose uid may be 501
on macOS, lives in /home). Their uid and home are never changed, they are never removed, and only
root gets SSH keys; each refusal is a warning. A home that another account with another uid also
uses is never re-owned, created by pw or given keys (uid 0's own keys excepted: they stay root's).

Shells: the config's shell if it is an executable file in the root, else the same name in
``/usr/local/bin`` (Linux's /bin/bash is FreeBSD's /usr/local/bin/bash), else /bin/sh with a warning.
An empty shell means the default.

Password policy: a user without ``passwordHash`` gets ``-w no`` (password field ``*``): no password
login, but not *locked*. FreeBSD's OpenSSH treats a password field starting with ``*LOCKED*`` as a
locked account and refuses even key logins, so such accounts named in the config are unlocked.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fpvm.guest.accountdb import BASE_ACCOUNTS_KEY, AccountDB, GrEntry, PwEntry
from fpvm.guest.accountdb import check_field as check_field  # re-exported for the plan
from fpvm.guest.actions import Action, Disposition
from fpvm.safetext import bad_char

if TYPE_CHECKING:
    from fpvm.guest.context import ApplyContext

Accounts = AccountDB  # the name older callers use
LOCKED_PREFIX = "*LOCKED*"

# podman's groups for its user (sudo, adm, wheel, systemd-journal) and their FreeBSD meaning.
GROUP_MAP: dict[str, str] = {
    "sudo": "wheel",
    "wheel": "wheel",
    "adm": "operator",
    "systemd-journal": "operator",
    "root": "wheel",  # Linux's gid 0 group is FreeBSD's wheel
}
DEFAULT_SHELL = "/bin/sh"
LOCAL_BIN = "/usr/local/bin"

# pw_checkname(): these characters are refused anywhere in a name ('$' is allowed only at the end).
_BAD_NAME_CHARS = set(' ,\t:+&#%$^()!@~*?<>=|\\/"')
MAX_NAME = 32  # MAXLOGNAME - 1


def check_name(name: str) -> str | None:
    """Why ``pw`` would reject ``name`` (None when it is acceptable)."""
    if not name:
        return "empty name"
    if len(name) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    if name.startswith("-"):
        return "starts with '-'"
    body = name[:-1] if name.endswith("$") else name
    for ch in body:
        if ch in _BAD_NAME_CHARS or not ch.isprintable() or ord(ch) > 127:
            return f"contains {ch!r}"
    return None


def sudoers_safe(name: str) -> bool:
    """Whether ``name`` can appear in a sudoers rule as a plain word (no escaping needed)."""
    body = name[:-1] if name.endswith("$") else name
    return bool(body) and all(c.isascii() and (c.isalnum() or c in "_.-") for c in body)


def clean_home(path: str) -> str:
    """``path`` as a home directory: absolute, no ``.``/``..``, simplified; ValueError otherwise.

    The same rules as files (``split_guest_path``); ``/`` itself is refused (keys would land in
    ``/.ssh``).
    """
    from fpvm.guest.rootfs import split_guest_path

    if bad_char(path) is not None:
        raise ValueError(f"{path!r}: contains control characters")
    parts = split_guest_path(path)
    if not parts:
        raise ValueError("the root directory cannot be a home directory")
    return "/" + "/".join(parts)


class Batch:
    """The account actions of one plan: the last one to finish writes the account files once."""

    def __init__(self) -> None:
        self.remaining = 0


def shares_home(acc: AccountDB, entry: PwEntry, home: str | None = None) -> PwEntry | None:
    """Another account with another uid whose home is ``home`` (default: the entry's own)."""
    for other in acc.users_with_home(home if home is not None else entry.home):
        if other.name != entry.name and other.uid != entry.uid:
            return other
    return None


def is_protected(ctx: ApplyContext, entry: PwEntry) -> bool:
    """Whether ``entry`` is a base-system account the config may not re-key, re-number, move or remove.

    The base system's accounts are the names the agent first found, kept in its state.
    """
    _ = ctx.accounts  # loading the database records the names on the first run
    saved = ctx.state.get(BASE_ACCOUNTS_KEY)
    return isinstance(saved, list) and entry.name in saved


def pw(ctx: ApplyContext, *args: str) -> list[str]:
    """``pw -R ROOT args...`` (the root as the host sees it)."""
    return ["pw", "-R", str(ctx.root.root), *args]


def _executable(ctx: ApplyContext, path: str) -> bool:
    """Whether ``path`` is an executable regular file inside the root (links followed inside it)."""
    if bad_char(path) is not None or not path.startswith("/"):
        return False
    try:
        st = os.stat(ctx.root.host_str(path, follow_last=True))
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


# ------------------------------------------------------------------------------------------------
class _AccountAction(Action):
    """An account action of a ``Batch``: the last one to finish writes the account files."""

    def __init__(self, source: str, disposition: Disposition, note: str, batch: Batch | None) -> None:
        super().__init__(source, disposition, note)
        self.batch = batch
        if batch is not None:
            batch.remaining += 1

    def apply(self, ctx: ApplyContext) -> bool:
        try:
            return self._apply(ctx)
        finally:
            if self.batch is not None:
                self.batch.remaining -= 1
            if self.batch is None or self.batch.remaining <= 0:
                ctx.commit_accounts()

    def _apply(self, ctx: ApplyContext) -> bool:
        raise NotImplementedError


class GroupAction(_AccountAction):
    """Create a group named in ``passwd.groups`` (or report a gid clash)."""

    kind = "group"

    def __init__(self, name: str, gid: int | None, source: str = "", batch: Batch | None = None) -> None:
        super().__init__(source, "apply", "", batch)
        self.name = name
        self.gid = gid

    def describe(self) -> str:
        return f"group {self.name}" + (f" gid {self.gid}" if self.gid is not None else "")

    def fields(self) -> dict[str, Any]:
        return {"name": self.name, "gid": self.gid}

    def _apply(self, ctx: ApplyContext) -> bool:
        acc = ctx.accounts
        existing = acc.group(self.name)
        if existing is not None:
            if self.gid is not None and existing.gid != self.gid:
                ctx.log.warn(f"group {self.name} exists with gid {existing.gid}, not {self.gid}; left as is")
            return False
        gid = self.gid
        other = acc.group_by_gid(gid) if gid is not None else None
        if other is not None:
            ctx.log.warn(f"gid {gid} belongs to group {other.name}; {self.name} gets a free gid")
            gid = None
        argv = pw(ctx, "groupadd", "-n", self.name)
        if gid is not None:
            argv += ["-g", str(gid)]
        ctx.run(argv)
        if gid is None and not ctx.recording:
            acc.add_group(GrEntry(self.name, -1))
            acc.pending.add(self.name)  # pw chose the gid: re-read when it is asked for
        else:
            acc.add_group(GrEntry(self.name, gid if gid is not None else acc.next_gid()))
        return True


class UserAction(_AccountAction):
    """Make one account match ``passwd.users[i]``: useradd, usermod only for what differs, or userdel."""

    kind = "user"

    def __init__(
        self,
        name: str,
        *,
        uid: int | None = None,
        gecos: str | None = None,
        home: str | None = None,
        shell: str | None = None,
        primary_group: str | None = None,
        groups: list[str] | None = None,
        password_hash: str | None = None,
        create_home: bool = True,
        should_exist: bool = True,
        source: str = "",
        disposition: Disposition = "apply",
        note: str = "",
        batch: Batch | None = None,
    ) -> None:
        super().__init__(source, disposition, note, batch)
        self.name = name
        self.uid = uid
        self.gecos = gecos
        self.home = home
        self.shell = shell or None  # "" means the default, as when absent
        self.primary_group = primary_group
        self.groups = list(groups or [])
        self.password_hash = password_hash
        self.create_home = create_home
        self.should_exist = should_exist

    def describe(self) -> str:
        if not self.should_exist:
            return f"user {self.name}: remove if present"
        bits = [f"user {self.name}"]
        if self.uid is not None:
            bits.append(f"uid {self.uid}")
        if self.groups:
            bits.append("groups " + ",".join(self.groups))
        if self.password_hash:
            bits.append("password hash set")
        return ", ".join(bits)

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "should_exist": self.should_exist}
        for key in ("uid", "gecos", "home", "shell", "primary_group"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.groups:
            out["groups"] = self.groups
        if self.password_hash is not None:
            out["password_hash"] = "(set)"
        return out

    # -- apply -------------------------------------------------------------------------------------
    def _apply(self, ctx: ApplyContext) -> bool:
        acc = ctx.accounts
        existing = acc.user(self.name) if acc.has_user(self.name) else None
        if not self.should_exist:
            if existing is None:
                return False
            if is_protected(ctx, existing):
                ctx.log.warn(f"user {self.name} is a base system account; not removed")
                return False
            ctx.run(pw(ctx, "userdel", "-n", self.name))
            acc.remove_user(existing)
            return True
        groups = self._existing_groups(ctx)
        shell = self._shell(ctx)
        if existing is None:
            return self._add(ctx, groups, shell)
        return self._modify(ctx, existing, groups, shell)

    def _existing_groups(self, ctx: ApplyContext) -> list[str]:
        out: list[str] = []
        for g in self.groups:
            if not ctx.accounts.has_group(g):
                ctx.log.warn(f"user {self.name}: group {g} does not exist; not added to it")
            elif g not in out:
                out.append(g)
        return out

    def _shell(self, ctx: ApplyContext) -> str | None:
        """The config's shell if the root has it; bash/zsh/... from /usr/local/bin; else /bin/sh."""
        if self.shell is None:
            return None
        if self.shell == DEFAULT_SHELL or _executable(ctx, self.shell):
            return self.shell
        base = self.shell.rsplit("/", 1)[-1]
        if self.shell.startswith("/") and base and base not in (".", "..") and bad_char(base) is None:
            local = f"{LOCAL_BIN}/{base}"
            if _executable(ctx, local):
                return local
        ctx.log.warn(
            f"user {self.name}: shell {self.shell!r} is not an executable in the root; using {DEFAULT_SHELL}"
        )
        return DEFAULT_SHELL

    def _uid_free(self, ctx: ApplyContext, uid: int, adding: bool) -> bool:
        other = ctx.accounts.user_by_uid(uid)
        if other is None or other.name == self.name:
            return True
        ctx.log.warn(
            f"user {self.name}: uid {uid} already belongs to {other.name}; "
            + ("pw allocates a free uid" if adding else "uid left unchanged")
        )
        return False

    def _resolve_home(self, ctx: ApplyContext, home: str) -> None:
        """Refuse a home whose path leaves the root through a symlink (before any command is built)."""
        try:
            ctx.root.host_str(home, follow_last=True)
        except ValueError as exc:
            raise ValueError(f"user {self.name}: home directory {exc}") from exc

    def _add(self, ctx: ApplyContext, groups: list[str], shell: str | None) -> bool:
        acc = ctx.accounts
        uid = self.uid if self.uid is not None and self._uid_free(ctx, self.uid, True) else None
        home = self.home or f"/home/{self.name}"
        self._resolve_home(ctx, home)
        create = self.create_home
        users = acc.users_with_home(home)
        if create and users:
            ctx.log.warn(
                f"user {self.name}: home {home} is also {users[0].name}'s; not created or re-owned by pw"
            )
            create = False
        argv = pw(ctx, "useradd", "-n", self.name)
        if uid is not None:
            argv += ["-u", str(uid)]
        if self.gecos:
            argv += ["-c", self.gecos]
        argv += ["-d", home]
        if self.primary_group:
            argv += ["-g", self.primary_group]
        if groups:
            argv += ["-G", ",".join(groups)]
        if create:
            argv += ["-m", "-M", "0755"]
        argv += ["-s", shell or DEFAULT_SHELL]
        stdin = None
        if self.password_hash:
            argv += ["-H", "0"]
            stdin = self.password_hash.encode()
        else:
            argv += ["-w", "no"]
        ctx.run(argv, input=stdin)
        # Keep the database in step with what pw did (and, when only recording, stage it).
        pending = False
        if uid is None:
            if ctx.recording:
                uid = acc.next_uid()
            else:
                uid, pending = -1, True
        if self.primary_group:
            gid = acc.gid_of(self.primary_group)
            if gid is None:
                raise RuntimeError(f"user {self.name}: primary group {self.primary_group} does not exist")
        else:  # the user's own group: gid = uid when free; -1 while only pw knows it (pending)
            gid = -1 if pending else (uid if acc.group_by_gid(uid) is None else acc.next_gid())
            acc.add_group(GrEntry(self.name, gid))
        entry = PwEntry(
            self.name, self.password_hash or "*", uid, gid, self.gecos or "", home, shell or DEFAULT_SHELL
        )
        acc.add_user(entry)
        acc.set_members(self.name, groups)
        if pending:
            acc.pending.add(self.name)
        if ctx.recording and create and not ctx.root.exists(home):
            ctx.root.makeparents(home)
            ctx.root.makedirs(home, 0o755, uid, gid)
        return True

    def _modify(self, ctx: ApplyContext, cur: PwEntry, groups: list[str], shell: str | None) -> bool:
        acc = ctx.accounts
        changed = False
        args: list[str] = []
        protected = is_protected(ctx, cur)
        if self.uid is not None and cur.uid != self.uid:
            if protected:
                ctx.log.warn(f"user {self.name} is a base system account; its uid {cur.uid} is left as is")
            elif self._uid_free(ctx, self.uid, False):
                args += ["-u", str(self.uid)]
        if self.gecos is not None and cur.gecos != self.gecos:
            args += ["-c", self.gecos]
        if self.home is not None and cur.home != self.home:
            if protected:
                ctx.log.warn(f"user {self.name} is a base system account; its home {cur.home} is left as is")
            else:
                self._resolve_home(ctx, self.home)
                args += ["-d", self.home]
        if self.primary_group is not None and acc.gid_of(self.primary_group) != cur.gid:
            args += ["-g", self.primary_group]
        current_groups = acc.supplementary(self.name)
        if any(g not in current_groups for g in groups):
            # -G replaces the membership list: keep the groups the account already had (Ignition adds).
            args += ["-G", ",".join([*current_groups, *(g for g in groups if g not in current_groups)])]
        if shell is not None and cur.shell != shell:
            args += ["-s", shell]
        if args:
            old_uid, home = cur.uid, cur.home
            ctx.run(pw(ctx, "usermod", "-n", self.name, *args))
            changed = True
            self._stage_mod(acc, cur, args)
            if "-u" in args and self.uid is not None:
                rehome(ctx, home, old_uid, self.uid)
        if self.password_hash and cur.password != self.password_hash:
            ctx.run(pw(ctx, "usermod", "-n", self.name, "-H", "0"), input=self.password_hash.encode())
            changed = True
            cur.password = self.password_hash
            acc.dirty = True
        elif cur.password.startswith(LOCKED_PREFIX):
            ctx.run(pw(ctx, "unlock", "-n", self.name))
            changed = True
            cur.password = cur.password[len(LOCKED_PREFIX) :]
            acc.dirty = True
        return changed

    def _stage_mod(self, acc: AccountDB, cur: PwEntry, args: list[str]) -> None:
        opts = dict(zip(args[::2], args[1::2], strict=True))
        if "-u" in opts:
            acc.set_uid(cur, int(opts["-u"]))
        if "-c" in opts:
            cur.gecos = opts["-c"]
        if "-d" in opts:
            acc.set_home(cur, opts["-d"])
        if "-g" in opts:
            gid = acc.gid_of(opts["-g"])
            if gid is not None:
                cur.gid = gid
        if "-G" in opts:
            acc.set_members(cur.name, opts["-G"].split(","))
        if "-s" in opts:
            cur.shell = opts["-s"]
        acc.dirty = True


def rehome(ctx: ApplyContext, home: str, old_uid: int, new_uid: int) -> int:
    """After a uid change, give the home tree's files of ``old_uid`` to ``new_uid``; returns the count.

    pw(8) changes the account only; without this, sshd's StrictModes would refuse the user's own
    ``.ssh`` (now owned by a stranger). Symlinks are not followed and other file systems (a host
    folder mounted inside the home) are left alone. A home another account also uses (toor's and
    root's /root) is never re-owned.
    """
    if not ctx.root.can_chown or not home.startswith("/") or not home.strip("/"):
        return 0
    others = [u.name for u in ctx.accounts.users_with_home(home) if u.uid != new_uid]
    if others:
        ctx.log.warn(f"{home} is also the home of {', '.join(others)}; its files keep their owner")
        return 0
    try:
        top = str(ctx.root.host(home, follow_last=True))
        top_dev = os.lstat(top).st_dev
    except (OSError, ValueError):
        return 0
    count = 0
    for dirpath, dirnames, filenames in os.walk(top):
        entries = [dirpath, *(os.path.join(dirpath, f) for f in filenames)]
        keep = []
        for name in dirnames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                entries.append(path)  # a link to a directory: its own owner only
            elif st.st_dev == top_dev:
                keep.append(name)  # walked (and chowned as its own dirpath)
        dirnames[:] = keep
        for path in entries:
            if os.lstat(path).st_uid == old_uid:
                os.lchown(path, new_uid, -1)
                count += 1
    if count:
        ctx.log.info(f"{home}: {count} entries of uid {old_uid} now belong to uid {new_uid}")
    return count


def map_groups(groups: Iterable[str]) -> tuple[list[str], list[str]]:
    """podman's Linux groups -> FreeBSD groups (order kept, no duplicates); also the mapped names."""
    out: list[str] = []
    mapped: list[str] = []
    for g in groups:
        target = GROUP_MAP.get(g, g)
        if target != g:
            mapped.append(g)
        if target not in out:
            out.append(target)
    if any(g in ("sudo", "adm", "systemd-journal") for g in groups):
        for extra in ("wheel", "operator"):
            if extra not in out:
                out.append(extra)
    return out, mapped
