"""SSH keys -> ``~/.ssh/authorized_keys``, merged with what is already there.

FreeBSD's sshd reads ``.ssh/authorized_keys`` (FCOS's ``authorized_keys.d/ignition`` is a Fedora
patch). Keys already in the file stay, in order; config keys are appended when missing, compared by
the whole line without surrounding blanks, so re-running adds nothing. ``.ssh`` is 0700 and the file
0600, both owned by the user: sshd's StrictModes refuses anything looser.

A home directory that already exists and belongs to someone else is left alone (its ownership is not
changed: it may be a shared or mounted folder) and a warning says that sshd's StrictModes may refuse
the key; ``.ssh`` inside it is still created for the user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fpvm.guest.actions import Action

if TYPE_CHECKING:
    from fpvm.guest.context import ApplyContext


def merge_keys(existing: str, keys: list[str]) -> str:
    """``existing`` with each key of ``keys`` appended unless an equal line is there already."""
    lines = existing.splitlines()
    seen = {line.strip() for line in lines if line.strip()}
    for key in keys:
        k = key.strip()
        if k and k not in seen:
            lines.append(k)
            seen.add(k)
    return "".join(line + "\n" for line in lines)


class AuthorizedKeys(Action):
    kind = "ssh-keys"

    def __init__(self, user: str, keys: list[str], home: str | None = None, source: str = "") -> None:
        super().__init__(source)
        self.user = user
        self.keys = [k.strip() for k in keys if k.strip()]
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
        home = entry.home or self.home or f"/home/{self.user}"
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
