"""SSH keys -> ``~/.ssh/authorized_keys``, merged with what is already there.

FreeBSD's sshd reads ``.ssh/authorized_keys`` (FCOS's ``authorized_keys.d/ignition`` is a Fedora
patch). Keys already in the file stay, in order; config keys are appended when missing, compared by
the whole line without surrounding blanks, so re-running adds nothing. ``.ssh`` is 0700 and the file
0600, both owned by the user: sshd's StrictModes refuses anything looser.

A home directory that already exists and belongs to someone else is left alone (its ownership is not
changed: it may be a shared or mounted folder) and a warning says that sshd's StrictModes may refuse
the key; ``.ssh`` inside it is still created for the user.

Refused, each with a warning: keys for a base-system account other than root (daemon's home is
/root: its keys would land in root's file), and keys for an account whose home another account with
another uid also uses (unless the account is uid 0: the files stay root's). A key holding a control
character (``\v``, ``\f``, U+2028 ...) is refused when the plan is made: sshd reads the file line by
line, and such a character must never let one key become two lines. The file is split at ``\n``
only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fpvm.guest.actions import Action
from fpvm.safetext import bad_char, lines

if TYPE_CHECKING:
    from fpvm.guest.context import ApplyContext


def check_key(key: str) -> str | None:
    """Why ``key`` cannot be one authorized_keys line (None when it can); tabs are blanks to sshd."""
    ch = bad_char(key.strip(" \t\r\n").replace("\t", " "))
    if ch is not None:
        return f"a key must be one line without control characters (found {ch!r})"
    return None


def merge_keys(existing: str, keys: list[str]) -> str:
    """``existing`` with each key of ``keys`` appended unless an equal line is there already."""
    out = list(lines(existing))
    seen = {line.strip(" \t\r") for line in out if line.strip(" \t\r")}
    for key in keys:
        k = key.strip(" \t\r\n")
        if check_key(k) is not None:
            raise ValueError(f"refusing an SSH key with control characters: {k[:40]!r}")
        if k and k not in seen:
            out.append(k)
            seen.add(k)
    return "".join(line + "\n" for line in out)


class AuthorizedKeys(Action):
    kind = "ssh-keys"

    def __init__(
        self,
        user: str,
        keys: list[str],
        home: str | None = None,
        source: str = "",
    ) -> None:
        super().__init__(source)
        self.user = user
        self.keys = [k.strip(" \t\r\n") for k in keys if k.strip(" \t\r\n")]
        self.home = home

    def describe(self) -> str:
        n = len(self.keys)
        return f"authorized_keys for {self.user}: {n} key{'s' if n != 1 else ''}"

    def fields(self) -> dict[str, Any]:
        return {"user": self.user, "keys": self.keys}

    def apply(self, ctx: ApplyContext) -> bool:
        entry = ctx.accounts.user(self.user)
        if entry is None:
            raise RuntimeError(f"user {self.user} does not exist; cannot install its SSH keys")
        from fpvm.guest.passwd import is_protected, shares_home

        if self.user != "root" and is_protected(ctx, entry):
            ctx.log.warn(f"{self.user} is a base system account; its SSH keys are not installed")
            return False
        home = entry.home or self.home or f"/home/{self.user}"
        # uid 0 may write its own keys into a home it shares (root's /root, also daemon's): the files
        # stay root's. Anyone else would hand the other account's home to itself.
        other = shares_home(ctx.accounts, entry, home) if entry.uid != 0 else None
        if other is not None or not home.strip("/"):
            whose = f"also {other.name}'s (uid {other.uid})" if other is not None else "the root directory"
            ctx.log.warn(f"home {home} of {self.user} is {whose}; SSH keys not installed")
            return False
        uid, gid = entry.uid, entry.gid
        fs = ctx.root
        changed = False
        st = fs.lstat(home)
        if st is None:
            changed |= fs.makeparents(home)
            changed |= fs.makedirs(home, 0o755, uid, gid)
        elif fs.can_chown and st.st_uid not in (uid, 0):
            ctx.log.warn(
                f"home {home} of {self.user} belongs to uid {st.st_uid}, not {uid}; ownership left as is "
                "(sshd StrictModes may refuse the key)"
            )
        ssh_dir = home.rstrip("/") + "/.ssh"
        if not fs.exists(ssh_dir):
            fs.makedirs(ssh_dir, 0o700, uid, gid)
            changed = True
        else:
            changed |= fs.set_attrs(ssh_dir, 0o700, uid, gid)
        path = ssh_dir + "/authorized_keys"
        current = fs.read_bytes_nofollow(path)
        text = merge_keys((current or b"").decode("utf-8", "replace"), self.keys)
        changed |= fs.write(path, text.encode(), 0o600, uid, gid)
        return changed
