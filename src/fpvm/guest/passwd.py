"""Users and groups: read the root's account files, plan ``pw`` commands, stage their effects.

FreeBSD keeps accounts in ``/etc/master.passwd`` (with hashes), the derived ``/etc/passwd``, the
``pwd.db``/``spwd.db`` databases, and ``/etc/group``. Only ``pw(8)`` should change them on a live
system, so every change here is a ``pw -R ROOT ...`` command through the runner, in the documented
argument form (pw(8) SYNOPSIS)::

    pw [-R rootdir] groupadd [-n] name [-g gid]
    pw [-R rootdir] useradd [-n] name [-u uid] [-c comment] [-d dir] [-g group] [-G grouplist]
                            [-m] [-M mode] [-w method] [-s shell] [-h fd | -H fd]
    pw [-R rootdir] usermod [-n] name|uid [-u newuid] [-c comment] [-d dir] [-G grouplist] [-s shell]
                            [-H fd]
    pw [-R rootdir] userdel [-n] name|uid
    pw [-R rootdir] unlock [-n] name|uid

When commands are only recorded (tests, image staging off FreeBSD) nothing would create the account,
yet later steps need it (``chown`` to the new uid, the home directory for ``authorized_keys``). The
agent then writes the text files ``master.passwd``, ``passwd`` and ``group`` itself the way pw would
leave them (not the ``.db`` files: ``pwd_mkdb`` is FreeBSD-only, see docs/freebsd-checklist.md) and
creates the home directory owned by the user. A second run therefore finds the account and records
nothing.

Password policy: a user without ``passwordHash`` gets ``-w no`` (password field ``*``): no password
login, but not *locked*. FreeBSD's OpenSSH treats a password field starting with ``*LOCKED*`` as a
locked account and refuses even key logins, so such accounts named in the config are unlocked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fpvm.guest.actions import Action, Disposition

if TYPE_CHECKING:
    from fpvm.guest.context import ApplyContext
    from fpvm.guest.rootfs import RootFS

MASTER_PASSWD = "/etc/master.passwd"
PASSWD = "/etc/passwd"
GROUP = "/etc/group"
LOCKED_PREFIX = "*LOCKED*"
MIN_UID = 1000  # pw.conf default minuid/mingid
MAX_UID = 32000

# podman's groups for its user (sudo, adm, wheel, systemd-journal) and their FreeBSD meaning.
GROUP_MAP: dict[str, str] = {
    "sudo": "wheel",
    "wheel": "wheel",
    "adm": "operator",
    "systemd-journal": "operator",
    "root": "wheel",  # Linux's gid 0 group is FreeBSD's wheel
}
DEFAULT_SHELL = "/bin/sh"

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


def check_field(value: str, what: str) -> str | None:
    """Account fields are ':'-separated lines: refuse ':' and line breaks."""
    if ":" in value or "\n" in value or "\r" in value or "\0" in value:
        return f"{what} may not contain ':' or line breaks"
    return None


class PwEntry:
    """One master.passwd line (FreeBSD's field order; passwd(5))."""

    def __init__(
        self,
        name: str,
        password: str,
        uid: int,
        gid: int,
        gecos: str,
        home: str,
        shell: str,
        pw_class: str = "",
        change: str = "0",
        expire: str = "0",
    ) -> None:
        self.name = name
        self.password = password
        self.uid = uid
        self.gid = gid
        self.gecos = gecos
        self.home = home
        self.shell = shell
        self.pw_class = pw_class
        self.change = change
        self.expire = expire

    def master_line(self) -> str:
        return ":".join(
            [
                self.name,
                self.password,
                str(self.uid),
                str(self.gid),
                self.pw_class,
                self.change,
                self.expire,
                self.gecos,
                self.home,
                self.shell,
            ]
        )

    def passwd_line(self) -> str:
        return ":".join([self.name, "*", str(self.uid), str(self.gid), self.gecos, self.home, self.shell])


class GrEntry:
    """One /etc/group line (group(5))."""

    def __init__(self, name: str, gid: int, members: list[str] | None = None, password: str = "*") -> None:
        self.name = name
        self.gid = gid
        self.members = list(members or [])
        self.password = password

    def line(self) -> str:
        return f"{self.name}:{self.password}:{self.gid}:{','.join(self.members)}"


class Accounts:
    """The root's users and groups, in file order (so rewritten files keep their layout)."""

    def __init__(self, users: list[PwEntry], groups: list[GrEntry], has_master: bool) -> None:
        self.users = users
        self.groups = groups
        self.has_master = has_master

    @classmethod
    def load(cls, root: RootFS) -> Accounts:
        master = root.read_text(MASTER_PASSWD)
        users: list[PwEntry] = []
        if master is not None:
            for line in master.splitlines():
                f = line.split(":")
                if len(f) >= 10 and not line.startswith("#"):
                    users.append(
                        PwEntry(f[0], f[1], _int(f[2]), _int(f[3]), f[7], f[8], f[9], f[4], f[5], f[6])
                    )
        else:
            for line in (root.read_text(PASSWD) or "").splitlines():
                f = line.split(":")
                if len(f) >= 7 and not line.startswith("#"):
                    users.append(PwEntry(f[0], f[1], _int(f[2]), _int(f[3]), f[4], f[5], f[6]))
        groups: list[GrEntry] = []
        for line in (root.read_text(GROUP) or "").splitlines():
            f = line.split(":")
            if len(f) >= 4 and not line.startswith("#"):
                groups.append(GrEntry(f[0], _int(f[2]), [m for m in f[3].split(",") if m], f[1]))
        return cls(users, groups, master is not None)

    # -- lookups ---------------------------------------------------------------------------------
    def user(self, name: str) -> PwEntry | None:
        return next((u for u in self.users if u.name == name), None)

    def user_by_uid(self, uid: int) -> PwEntry | None:
        return next((u for u in self.users if u.uid == uid), None)

    def group(self, name: str) -> GrEntry | None:
        return next((g for g in self.groups if g.name == name), None)

    def group_by_gid(self, gid: int) -> GrEntry | None:
        return next((g for g in self.groups if g.gid == gid), None)

    def uid_of(self, name: str) -> int | None:
        if name == "root":
            return 0
        u = self.user(name)
        return None if u is None else u.uid

    def gid_of(self, name: str) -> int | None:
        g = self.group(name)
        if g is not None:
            return g.gid
        if name in ("root", "wheel"):
            return 0
        return None

    def supplementary(self, name: str) -> list[str]:
        return [g.name for g in self.groups if name in g.members]

    def next_id(self, used: Iterable[int]) -> int:
        taken = set(used)
        for n in range(MIN_UID, MAX_UID):
            if n not in taken:
                return n
        raise RuntimeError("no free id left")

    # -- staging (record mode): what pw would have written -----------------------------------------
    def save(self, root: RootFS) -> None:
        """Write master.passwd (0600), passwd and group (0644) as pw would."""
        master = "".join(u.master_line() + "\n" for u in self.users)
        passwd = "".join(u.passwd_line() + "\n" for u in self.users)
        group = "".join(g.line() + "\n" for g in self.groups)
        root.write(MASTER_PASSWD, master.encode(), 0o600, 0, 0)
        root.write(PASSWD, passwd.encode(), 0o644, 0, 0)
        root.write(GROUP, group.encode(), 0o644, 0, 0)

    def set_members(self, user: str, groups: Iterable[str]) -> None:
        wanted = set(groups)
        for g in self.groups:
            if g.name in wanted and user not in g.members:
                g.members.append(user)
            elif g.name not in wanted and user in g.members:
                g.members.remove(user)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1


def _attr(obj: Any, name: str, default: Any = None) -> Any:
    value = getattr(obj, name, default)
    return default if value is None else value


def pw(ctx: ApplyContext, *args: str) -> list[str]:
    """``pw -R ROOT args...`` (the root as the host sees it)."""
    return ["pw", "-R", str(ctx.root.root), *args]


# ------------------------------------------------------------------------------------------------
class GroupAction(Action):
    """Create a group named in ``passwd.groups`` (or report a gid clash)."""

    kind = "group"

    def __init__(self, name: str, gid: int | None, source: str = "") -> None:
        super().__init__(source)
        self.name = name
        self.gid = gid

    def describe(self) -> str:
        return f"group {self.name}" + (f" gid {self.gid}" if self.gid is not None else "")

    def fields(self) -> dict[str, Any]:
        return {"name": self.name, "gid": self.gid}

    def apply(self, ctx: ApplyContext) -> bool:
        acc = ctx.accounts
        existing = acc.group(self.name)
        if existing is not None:
            if self.gid is not None and existing.gid != self.gid:
                ctx.log.warn(f"group {self.name} exists with gid {existing.gid}, not {self.gid}; left as is")
            return False
        gid = self.gid
        if gid is not None and acc.group_by_gid(gid) is not None:
            other = acc.group_by_gid(gid)
            ctx.log.warn(
                f"gid {gid} belongs to group {other.name if other else '?'}; {self.name} gets a free gid"
            )
            gid = None
        argv = pw(ctx, "groupadd", "-n", self.name)
        if gid is not None:
            argv += ["-g", str(gid)]
        ctx.run(argv)
        if ctx.recording:
            acc.groups.append(
                GrEntry(self.name, gid if gid is not None else acc.next_id(g.gid for g in acc.groups))
            )
            acc.save(ctx.root)
        else:
            ctx.forget_accounts()
        return True


class UserAction(Action):
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
        dropped_groups: list[str] | None = None,
        password_hash: str | None = None,
        create_home: bool = True,
        should_exist: bool = True,
        source: str = "",
        disposition: Disposition = "apply",
        note: str = "",
    ) -> None:
        super().__init__(source, disposition, note)
        self.name = name
        self.uid = uid
        self.gecos = gecos
        self.home = home
        self.shell = shell
        self.primary_group = primary_group
        self.groups = list(groups or [])
        self.dropped_groups = list(dropped_groups or [])
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
        if self.dropped_groups:
            out["dropped_groups"] = self.dropped_groups
        if self.password_hash is not None:
            out["password_hash"] = "(set)"
        return out

    # -- apply -------------------------------------------------------------------------------------
    def apply(self, ctx: ApplyContext) -> bool:
        acc = ctx.accounts
        existing = acc.user(self.name)
        if not self.should_exist:
            if existing is None:
                return False
            ctx.run(pw(ctx, "userdel", "-n", self.name))
            if ctx.recording:
                acc.users.remove(existing)
                acc.set_members(self.name, [])
                acc.save(ctx.root)
            else:
                ctx.forget_accounts()
            return True
        groups = self._existing_groups(ctx)
        shell = self._shell(ctx)
        if existing is None:
            return self._add(ctx, groups, shell)
        return self._modify(ctx, existing, groups, shell)

    def _existing_groups(self, ctx: ApplyContext) -> list[str]:
        out: list[str] = []
        for g in self.groups:
            if ctx.accounts.group(g) is None:
                ctx.log.warn(f"user {self.name}: group {g} does not exist; not added to it")
            elif g not in out:
                out.append(g)
        return out

    def _shell(self, ctx: ApplyContext) -> str | None:
        """The config's shell if the root has it; bash/zsh/... from /usr/local/bin; else /bin/sh."""
        if self.shell is None:
            return None
        if ctx.root.exists(self.shell):
            return self.shell
        base = self.shell.rsplit("/", 1)[-1]
        local = f"/usr/local/bin/{base}"
        if ctx.root.exists(local):
            return local
        ctx.log.warn(f"user {self.name}: shell {self.shell} not found; using {DEFAULT_SHELL}")
        return DEFAULT_SHELL

    def _uid_free(self, ctx: ApplyContext, uid: int) -> bool:
        other = ctx.accounts.user_by_uid(uid)
        if other is None or other.name == self.name:
            return True
        ctx.log.warn(
            f"user {self.name}: uid {uid} already belongs to {other.name}; "
            + ("pw allocates a free uid" if ctx.accounts.user(self.name) is None else "uid left unchanged")
        )
        return False

    def _add(self, ctx: ApplyContext, groups: list[str], shell: str | None) -> bool:
        acc = ctx.accounts
        uid = self.uid if self.uid is not None and self._uid_free(ctx, self.uid) else None
        home = self.home or f"/home/{self.name}"
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
        if self.create_home:
            argv += ["-m", "-M", "0755"]
        argv += ["-s", shell or DEFAULT_SHELL]
        stdin = None
        if self.password_hash:
            argv += ["-H", "0"]
            stdin = self.password_hash.encode()
        else:
            argv += ["-w", "no"]
        ctx.run(argv, input=stdin)
        if not ctx.recording:
            ctx.forget_accounts()
            return True
        # Stage what pw would have done.
        if uid is None:
            uid = acc.next_id(u.uid for u in acc.users)
        if self.primary_group:
            gid = acc.gid_of(self.primary_group)
            if gid is None:
                raise RuntimeError(f"user {self.name}: primary group {self.primary_group} does not exist")
        else:
            gid = uid if acc.group_by_gid(uid) is None else acc.next_id(g.gid for g in acc.groups)
            acc.groups.append(GrEntry(self.name, gid))
        entry = PwEntry(
            self.name, self.password_hash or "*", uid, gid, self.gecos or "", home, shell or DEFAULT_SHELL
        )
        acc.users.append(entry)
        acc.set_members(self.name, groups)
        acc.save(ctx.root)
        if self.create_home and not ctx.root.exists(home):
            ctx.root.makeparents(home)
            ctx.root.makedirs(home, 0o755, uid, gid)
        return True

    def _modify(self, ctx: ApplyContext, cur: PwEntry, groups: list[str], shell: str | None) -> bool:
        acc = ctx.accounts
        changed = False
        args: list[str] = []
        if self.uid is not None and cur.uid != self.uid and self._uid_free(ctx, self.uid):
            args += ["-u", str(self.uid)]
        if self.gecos is not None and cur.gecos != self.gecos:
            args += ["-c", self.gecos]
        if self.home is not None and cur.home != self.home:
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
            if ctx.recording:
                self._stage_mod(acc, cur, args)
            if "-u" in args and self.uid is not None:
                rehome(ctx, home, old_uid, self.uid)
        if self.password_hash and cur.password != self.password_hash:
            ctx.run(pw(ctx, "usermod", "-n", self.name, "-H", "0"), input=self.password_hash.encode())
            changed = True
            if ctx.recording:
                cur.password = self.password_hash
        elif cur.password.startswith(LOCKED_PREFIX):
            ctx.run(pw(ctx, "unlock", "-n", self.name))
            changed = True
            if ctx.recording:
                cur.password = cur.password[len(LOCKED_PREFIX) :]
        if changed:
            if ctx.recording:
                acc.save(ctx.root)
            else:
                ctx.forget_accounts()
        return changed

    def _stage_mod(self, acc: Accounts, cur: PwEntry, args: list[str]) -> None:
        opts = dict(zip(args[::2], args[1::2], strict=True))
        if "-u" in opts:
            cur.uid = int(opts["-u"])
        if "-c" in opts:
            cur.gecos = opts["-c"]
        if "-d" in opts:
            cur.home = opts["-d"]
        if "-g" in opts:
            gid = acc.gid_of(opts["-g"])
            if gid is not None:
                cur.gid = gid
        if "-G" in opts:
            acc.set_members(cur.name, opts["-G"].split(","))
        if "-s" in opts:
            cur.shell = opts["-s"]


def rehome(ctx: ApplyContext, home: str, old_uid: int, new_uid: int) -> int:
    """After a uid change, give the home tree's files of ``old_uid`` to ``new_uid``; returns the count.

    pw(8) changes the account only; without this, sshd's StrictModes would refuse the user's own
    ``.ssh`` (now owned by a stranger). Symlinks are not followed and other file systems (a host
    folder mounted inside the home) are left alone.
    """
    if not ctx.root.can_chown or not home.startswith("/"):
        return 0
    import os

    try:
        top = str(ctx.root.host(home, follow_last=True))
        top_dev = os.lstat(top).st_dev
    except (OSError, ValueError):
        return 0
    import stat

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
