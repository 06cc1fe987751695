"""The account database of a root: ``master.passwd``, ``passwd`` and ``group``, read once, indexed.

This module only reads, indexes and writes the text files (passwd(5), group(5)); what to do with an
account is ``fpvm.guest.passwd``'s job. Why one database for the whole run: provisioning thousands
of users must cost time linear in their number, so every lookup is a dict lookup, free ids come from
a cursor, and the files are written once at the end (``AccountDB.save``) instead of after each
account.

Lines are split at ``\\n`` only (never ``str.splitlines``, which also splits at ``\\v``, ``\\f``,
``\\x1c``-``\\x1e``, ``\\x85``, U+2028 and U+2029: a gecos holding one of those would turn one account
into two lines on re-read). Fields written here never contain control characters (``check_field``),
so what is written reads back as the same accounts.

On a live system ``pw(8)`` writes the files; the agent then keeps the database in step with what each
command did, and only ids that pw chose itself (a ``useradd`` without ``-u``) are unknown: the entry
is marked *pending* and the files are re-read once, the first time such an id is asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from fpvm.safetext import bad_char, lines

if TYPE_CHECKING:
    from fpvm.guest.rootfs import RootFS

BASE_ACCOUNTS_KEY = "base_accounts"  # agent state: the base system's account names, as first found
MASTER_PASSWD = "/etc/master.passwd"
PASSWD = "/etc/passwd"
GROUP = "/etc/group"
MIN_ID = 1000  # pw.conf default minuid/mingid
MAX_ID = 32000  # pw.conf default maxuid/maxgid
SYSTEM_IDS = range(0, MIN_ID)  # FreeBSD's base system and ports accounts (hier(7), pw.conf)
HIGH_SYSTEM_IDS = range(65533, 65536)  # nogroup, nobody
# master.passwd(5)'s fields, in its order.
MASTER_FIELDS = ("name", "password", "uid", "gid", "pw_class", "change", "expire", "gecos", "home", "shell")


def check_field(value: str, what: str) -> str | None:
    """Account fields are ':'-separated lines: refuse ':' and control characters (passwd(5))."""
    if ":" in value:
        return f"{what} may not contain ':'"
    ch = bad_char(value)
    if ch is not None:
        return f"{what} may not contain control characters (found {ch!r})"
    return None


class PwEntry:
    """One master.passwd line (FreeBSD's field order; passwd(5))."""

    __slots__ = ("change", "expire", "gecos", "gid", "home", "name", "password", "pw_class", "shell", "uid")

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
        return ":".join(str(getattr(self, field)) for field in MASTER_FIELDS)

    def passwd_line(self) -> str:
        return ":".join([self.name, "*", str(self.uid), str(self.gid), self.gecos, self.home, self.shell])


class GrEntry:
    """One /etc/group line (group(5)); ``pos`` is its place in the file (membership lists keep it)."""

    __slots__ = ("gid", "members", "name", "password", "pos")

    def __init__(self, name: str, gid: int, members: list[str] | None = None, password: str = "*") -> None:
        self.name = name
        self.gid = gid
        self.members = list(members or [])
        self.password = password
        self.pos = 0

    def line(self) -> str:
        return f"{self.name}:{self.password}:{self.gid}:{','.join(self.members)}"


class AccountDB:
    """The root's users and groups in file order, indexed by name and id."""

    def __init__(self, users: list[PwEntry], groups: list[GrEntry], has_master: bool) -> None:
        self.users = users
        self.groups = groups
        self.has_master = has_master
        self.dirty = False  # changed in memory, not yet written (staging)
        self.pending: set[str] = set()  # accounts whose ids pw chose (live system): re-read when asked
        self.root: RootFS | None = None  # where ``load`` read the files (for the one re-read)
        self._reindex()

    def _reindex(self) -> None:
        self._by_name: dict[str, PwEntry] = {}
        self._by_uid: dict[int, PwEntry] = {}
        self._by_home: dict[str, list[PwEntry]] = {}
        for u in self.users:
            self._by_name.setdefault(u.name, u)
            self._by_uid.setdefault(u.uid, u)
            self._by_home.setdefault(_home_key(u.home), []).append(u)
        self._gr_name: dict[str, GrEntry] = {}
        self._gr_gid: dict[int, GrEntry] = {}
        self._member_of: dict[str, list[GrEntry]] = {}
        for i, g in enumerate(self.groups):
            g.pos = i
            self._gr_name.setdefault(g.name, g)
            self._gr_gid.setdefault(g.gid, g)
            for m in g.members:
                self._member_of.setdefault(m, []).append(g)
        self._uid_cursor = MIN_ID
        self._gid_cursor = MIN_ID

    # -- reading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: RootFS) -> AccountDB:
        master = root.read_text(MASTER_PASSWD)
        users: list[PwEntry] = []
        if master is not None:
            for line in lines(master):
                f = line.split(":")
                if len(f) >= 10 and not line.startswith("#"):
                    users.append(
                        PwEntry(f[0], f[1], _int(f[2]), _int(f[3]), f[7], f[8], f[9], f[4], f[5], f[6])
                    )
        else:
            for line in lines(root.read_text(PASSWD) or ""):
                f = line.split(":")
                if len(f) >= 7 and not line.startswith("#"):
                    users.append(PwEntry(f[0], f[1], _int(f[2]), _int(f[3]), f[4], f[5], f[6]))
        groups: list[GrEntry] = []
        for line in lines(root.read_text(GROUP) or ""):
            f = line.split(":")
            if len(f) >= 4 and not line.startswith("#"):
                groups.append(GrEntry(f[0], _int(f[2]), [m for m in f[3].split(",") if m], f[1]))
        db = cls(users, groups, master is not None)
        db.root = root
        return db

    def reload(self, root: RootFS) -> None:
        """Re-read the files (after pw chose ids the database does not know)."""
        fresh = AccountDB.load(root)
        self.users, self.groups, self.has_master = fresh.users, fresh.groups, fresh.has_master
        self.pending.clear()
        self.dirty = False
        self._reindex()

    # -- lookups ---------------------------------------------------------------------------------
    def _settle(self, name: str | None = None) -> None:
        """Re-read the files when a lookup may concern an id only pw knows (see ``pending``)."""
        if self.pending and (name is None or name in self.pending) and self.root is not None:
            self.reload(self.root)

    def user(self, name: str) -> PwEntry | None:
        self._settle(name)
        return self._by_name.get(name)

    def has_user(self, name: str) -> bool:
        """Whether ``name`` exists (never needs a re-read: names are always known)."""
        return name in self._by_name

    def user_by_uid(self, uid: int) -> PwEntry | None:
        self._settle()
        return self._by_uid.get(uid)

    def group(self, name: str) -> GrEntry | None:
        self._settle(name)
        return self._gr_name.get(name)

    def has_group(self, name: str) -> bool:
        return name in self._gr_name

    def group_by_gid(self, gid: int) -> GrEntry | None:
        self._settle()
        return self._gr_gid.get(gid)

    def uid_of(self, name: str) -> int | None:
        if name == "root":
            return 0
        u = self.user(name)
        return None if u is None else u.uid

    def gid_of(self, name: str) -> int | None:
        g = self.group(name)
        if g is not None:
            return g.gid
        return 0 if name in ("root", "wheel") else None

    def supplementary(self, name: str) -> list[str]:
        """The groups listing ``name`` as a member, in file order."""
        return [g.name for g in sorted(self._member_of.get(name, ()), key=lambda g: g.pos)]

    def users_with_home(self, home: str) -> list[PwEntry]:
        """Accounts whose home directory is ``home`` (repeated and trailing slashes ignored)."""
        return list(self._by_home.get(_home_key(home), ()))

    def next_uid(self) -> int:
        """The lowest free uid from pw's ``minuid`` up (pw's own choice)."""
        self._settle()
        self._uid_cursor = self._free(self._uid_cursor, self._by_uid)
        return self._uid_cursor

    def next_gid(self) -> int:
        self._settle()
        self._gid_cursor = self._free(self._gid_cursor, self._gr_gid)
        return self._gid_cursor

    @staticmethod
    def _free(start: int, taken: Mapping[int, object]) -> int:
        for n in range(start, MAX_ID):
            if n not in taken:
                return n
        raise RuntimeError("no free id left")

    # -- changes ---------------------------------------------------------------------------------
    def add_user(self, entry: PwEntry) -> None:
        self.users.append(entry)
        self._by_home.setdefault(_home_key(entry.home), []).append(entry)
        self._by_name.setdefault(entry.name, entry)
        self._by_uid.setdefault(entry.uid, entry)
        self.dirty = True

    def remove_user(self, entry: PwEntry) -> None:
        self.users.remove(entry)  # linear, as pw userdel's own rewrite; removals are rare
        self._by_name.pop(entry.name, None)
        self._drop_home(entry)
        if self._by_uid.get(entry.uid) is entry:
            del self._by_uid[entry.uid]
        self._uid_cursor = min(self._uid_cursor, max(entry.uid, MIN_ID))
        self.set_members(entry.name, [])
        self.pending.discard(entry.name)
        self.dirty = True

    def set_uid(self, entry: PwEntry, uid: int) -> None:
        if self._by_uid.get(entry.uid) is entry:
            del self._by_uid[entry.uid]
            self._uid_cursor = min(self._uid_cursor, max(entry.uid, MIN_ID))
        entry.uid = uid
        self._by_uid.setdefault(uid, entry)
        self.dirty = True

    def set_home(self, entry: PwEntry, home: str) -> None:
        self._drop_home(entry)
        entry.home = home
        self._by_home.setdefault(_home_key(home), []).append(entry)
        self.dirty = True

    def _drop_home(self, entry: PwEntry) -> None:
        same = self._by_home.get(_home_key(entry.home), [])
        if entry in same:
            same.remove(entry)

    def add_group(self, entry: GrEntry) -> None:
        entry.pos = len(self.groups)
        self.groups.append(entry)
        self._gr_name.setdefault(entry.name, entry)
        self._gr_gid.setdefault(entry.gid, entry)
        for m in entry.members:
            self._member_of.setdefault(m, []).append(entry)
        self.dirty = True

    def add_member(self, group: GrEntry, user: str) -> None:
        """Add ``user`` to ``group`` (checked through the user's own short list, not the group's)."""
        mine = self._member_of.setdefault(user, [])
        if group not in mine:
            mine.append(group)
            group.members.append(user)
            self.dirty = True

    def set_members(self, user: str, groups: Iterable[str]) -> None:
        """Make ``user`` a member of exactly ``groups`` (existing ones; others are ignored)."""
        order = list(groups)
        wanted = set(order)
        mine = self._member_of.setdefault(user, [])
        for g in list(mine):
            if g.name not in wanted:
                if user in g.members:
                    g.members.remove(user)
                mine.remove(g)
                self.dirty = True
        for name in order:
            grp = self.group(name)
            if grp is not None:
                self.add_member(grp, user)

    # -- writing (staging: what pw would have written) ----------------------------------------------
    def save(self, root: RootFS) -> None:
        """Write master.passwd (0600), passwd and group (0644) as pw would."""
        master = "".join(u.master_line() + "\n" for u in self.users)
        passwd = "".join(u.passwd_line() + "\n" for u in self.users)
        group = "".join(g.line() + "\n" for g in self.groups)
        root.write(MASTER_PASSWD, master.encode(), 0o600, 0, 0)
        root.write(PASSWD, passwd.encode(), 0o644, 0, 0)
        root.write(GROUP, group.encode(), 0o644, 0, 0)
        self.dirty = False


def system_account_names(db: AccountDB) -> list[str]:
    """The base system's accounts: a system uid and a home outside /home (``passwd`` protects them).

    FreeBSD ships only such accounts (homes /root, /, /var/..., /nonexistent); podman's own user may
    have a low uid (501 on macOS) but lives in /home.
    """
    out = []
    for u in db.users:
        home = _home_key(u.home)
        in_home = any(home == h or home.startswith(h + "/") for h in ("/home", "/usr/home"))
        if (u.uid in SYSTEM_IDS or u.uid in HIGH_SYSTEM_IDS) and not in_home:
            out.append(u.name)
    return sorted(out)


def _home_key(home: str) -> str:
    return "/" + "/".join(p for p in home.split("/") if p)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1

