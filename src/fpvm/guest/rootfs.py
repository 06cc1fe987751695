"""A target root: every guest path the agent touches goes through here.

The agent provisions a root that may be a staged image on a host (tests, image builds) or the live
system (`/`). Guest paths in an Ignition config are absolute *guest* paths, so they must be joined
under the root, and nothing the config (or a file already in the root) says may lead a write outside
it. Rules, applied to every component of a path before the last one:

* ``..`` and ``.`` components and empty names are refused outright (Ignition requires clean paths;
  a ``..`` is either a mistake or an attack).
* A relative symlink is followed, component by component, as long as it stays inside the root
  (FreeBSD's own ``/home -> usr/home`` is relative).
* An absolute symlink is refused when the root is not ``/``: followed on the host it would leave the
  root (a planted ``/etc/containers -> /`` would make us write the host's ``/containers.conf``).
  On the live system (root ``/``) absolute targets cannot leave the root and are followed.

The last component is never followed for writes: a file written over a symlink replaces the link
(``rename`` semantics), exactly like Ignition with ``overwrite: true``.

Ownership: chown needs root. When the agent runs unprivileged (tests, image staging as a user) the
wanted owner cannot be applied; ``RootFS.can_chown`` tells callers, and the ownership is skipped (the
mode still is applied) instead of failing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from pathlib import Path

from fpvm.fsutil import atomic_write, clean_stale_temps, fsync_dir, fsync_path, read_regular

MAX_SYMLINKS = 40


class UnsafePathError(ValueError):
    """A guest path that would escape the root, or is not a clean absolute path."""


def split_guest_path(path: str) -> list[str]:
    """Components of a clean absolute guest path; raises UnsafePathError for anything else."""
    if not path.startswith("/"):
        raise UnsafePathError(f"{path!r}: not an absolute path")
    if "\0" in path:
        raise UnsafePathError(f"{path!r}: contains a NUL byte")
    parts = [p for p in path.split("/") if p]
    for part in parts:
        if part in (".", ".."):
            raise UnsafePathError(f"{path!r}: '{part}' components are refused")
    return parts


def _not_root(guest_path: str) -> None:
    """Refuse ``/`` (and ``//``): the root itself is never replaced, removed, re-owned or linked."""
    if not split_guest_path(guest_path):
        raise UnsafePathError(f"{guest_path!r} is the root itself; it is never replaced, removed or changed")


class RootFS:
    """Safe file operations on guest paths under one root directory."""

    def __init__(self, root: str | os.PathLike[str], *, can_chown: bool | None = None) -> None:
        self.root = Path(os.path.abspath(root))
        self.is_live = self.root == Path("/")
        self.can_chown = (os.geteuid() == 0) if can_chown is None else can_chown
        self._prefix = "" if self.is_live else str(self.root)
        # Resolved parents and directories known to exist, valid until the agent itself changes a
        # link or removes a node (``_forget``): a config with 10 000 files then costs one walk per
        # directory instead of one per file and component.
        self._parents: dict[tuple[str, ...], list[str]] = {}
        self._dirs: set[str] = set()
        # Host paths (files and directories) whose fsync is deferred to ``sync_deferred``; None while
        # every write is made durable on the spot.
        self._deferred: set[str] | None = None
        # Stale temporary files (a run killed mid-write) are removed once per directory written to;
        # only files older than this RootFS, so a concurrent writer's are left alone (fsutil).
        self._started = time.time()
        self._cleaned: set[str] = set()

    # -- durability ------------------------------------------------------------------------------
    def defer_sync(self) -> None:
        """Stop fsyncing each write; ``sync_deferred`` makes them all durable at once.

        Each write stays atomic (temporary file + rename); only durability waits. The caller must not
        record anything that depends on these writes being on disk before ``sync_deferred`` returns:
        provision uses this only while the state does not say "provisioned", so a crash before the end
        means the next boot provisions again and rewrites every file (every write compares bytes).
        """
        if self._deferred is None:
            self._deferred = set()

    def sync_deferred(self) -> int:
        """Make the deferred writes durable and go back to fsyncing each write; returns their number.

        One sync(2) starts the write-back of all of them together; it is not enough on its own (FreeBSD's
        sync(2), BUGS: "may return before the buffers are completely flushed"), so each file and each
        directory (once) is then fsync(2)ed, which waits for what sync(2) already scheduled.
        """
        pending, self._deferred = self._deferred, None
        if not pending:
            return 0
        os.sync()
        for path in sorted(pending):
            fsync_path(path)
        return len(pending)

    def _durable(self, host: str | os.PathLike[str], parent: str | os.PathLike[str]) -> None:
        """After a change of ``host`` (a file, or None) in directory ``parent``: fsync now or later."""
        if self._deferred is None:
            fsync_dir(parent)
            return
        self._deferred.add(os.fspath(parent))
        if host:
            self._deferred.add(os.fspath(host))

    def _forget(self) -> None:
        self._parents.clear()
        self._dirs.clear()

    def _join(self, parts: list[str]) -> str:
        return self._prefix + "/" + "/".join(parts)

    def _node(self, guest_path: str) -> str:
        """The host path of a node to change: never the root itself (nor, so, anything beside it).

        Every change goes through here. ``/`` (or ``//``) names the root: replacing, removing,
        re-owning or linking it would destroy the target, and its temporary file would land in the
        root's parent, outside it. The plan refuses such entries first; this is the last line.
        """
        _not_root(guest_path)
        return self.host_str(guest_path)

    # -- path resolution -------------------------------------------------------------------------
    def host(self, guest_path: str, *, follow_last: bool = False) -> Path:
        """The host path for ``guest_path``, with parents resolved under the root's rules."""
        return Path(self.host_str(guest_path, follow_last=follow_last))

    def host_str(self, guest_path: str, *, follow_last: bool = False) -> str:
        """``host`` as a plain string (the agent's hot paths avoid building Path objects)."""
        parts = split_guest_path(guest_path)
        if not parts:
            return str(self.root)
        key = tuple(parts[:-1])
        parent = self._parents.get(key)
        if parent is None:
            parent = self._walk([], parts[:-1], True, guest_path, 0)
            self._parents[key] = parent
        resolved = self._walk(parent, parts[-1:], follow_last, guest_path, 0)
        return self._join(resolved)

    def _walk(self, base: list[str], parts: list[str], follow_last: bool, orig: str, depth: int) -> list[str]:
        """Resolve ``parts`` onto the already-safe component list ``base``."""
        current = list(base)
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            candidate = [*current, part]
            if last and not follow_last:
                return candidate
            host = self._join(candidate)
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                current = candidate
                continue
            except NotADirectoryError as exc:
                raise UnsafePathError(f"{orig!r}: a parent is not a directory") from exc
            if not stat.S_ISLNK(st.st_mode):
                current = candidate
                continue
            if depth >= MAX_SYMLINKS:
                raise UnsafePathError(f"{orig!r}: too many levels of symbolic links")
            target = os.readlink(host)
            guest_link = "/" + "/".join(candidate)
            if target.startswith("/"):
                if not self.is_live:
                    raise UnsafePathError(
                        f"{orig!r}: {guest_link} is a symlink to the absolute path {target!r}, "
                        "which would be followed outside the root"
                    )
                current = self._relative([], target, guest_link, orig, depth)
                continue
            current = self._relative(current, target, guest_link, orig, depth)
        return current

    def _relative(self, base: list[str], target: str, link: str, orig: str, depth: int) -> list[str]:
        """Follow a relative link target from directory ``base``; ``..`` may not climb above the root."""
        current = list(base)
        pieces = [p for p in target.split("/") if p and p != "."]
        for piece in pieces:
            if piece == "..":
                if not current:
                    raise UnsafePathError(f"{orig!r}: symlink {link} -> {target!r} leads outside the root")
                current.pop()
                continue
            current = self._walk(current, [piece], True, orig, depth + 1)
        return current

    # -- queries -------------------------------------------------------------------------------------
    def lstat(self, guest_path: str) -> os.stat_result | None:
        try:
            return os.lstat(self.host_str(guest_path))
        except FileNotFoundError:
            return None

    def exists(self, guest_path: str) -> bool:
        return self.lstat(guest_path) is not None

    def is_dir(self, guest_path: str) -> bool:
        st = self.lstat(guest_path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def read_bytes(self, guest_path: str) -> bytes | None:
        """Contents of a regular file (symlinks followed inside the root), or None when absent."""
        try:
            host = self.host_str(guest_path, follow_last=True)
            return read_regular(host)  # bounded; a FIFO/device raises instead of hanging or filling memory
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def read_text(self, guest_path: str) -> str | None:
        data = self.read_bytes(guest_path)
        return None if data is None else data.decode("utf-8", "replace")

    def readlink(self, guest_path: str) -> str | None:
        try:
            return os.readlink(self.host(guest_path))
        except (FileNotFoundError, OSError):
            return None

    # -- changes (each returns True when something changed) -------------------------------------------
    def makedirs(self, guest_path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> bool:
        """mkdir -p; directories created here are ``mode`` and owned by uid:gid (root by default)."""
        if guest_path in self._dirs:
            return False
        parts = split_guest_path(guest_path)
        changed = False
        for i in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:i])
            if sub in self._dirs:
                continue
            host = self.host_str(sub, follow_last=True)
            try:
                st = os.stat(host)
            except FileNotFoundError:
                os.mkdir(host, mode)
                os.chmod(host, mode)  # umask would otherwise narrow it
                if self.can_chown:
                    try:
                        os.chown(host, uid, gid)
                    except OSError as exc:
                        if exc.errno != errno.EPERM:
                            raise
                self._durable("", os.path.dirname(host))
                changed = True
                self._dirs.add(sub)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePathError(f"{guest_path!r}: {sub} exists and is not a directory")
            self._dirs.add(sub)
        return changed

    def makeparents(self, guest_path: str) -> bool:
        """Create the missing parents of ``guest_path`` (root:wheel 0755, as Ignition does)."""
        parts = split_guest_path(guest_path)
        if len(parts) <= 1:
            return False
        return self.makedirs("/" + "/".join(parts[:-1]))

    def write(
        self,
        guest_path: str,
        data: bytes,
        mode: int = 0o644,
        uid: int | None = 0,
        gid: int | None = 0,
    ) -> bool:
        """Atomically replace the file unless it already has these bytes, mode and owner."""
        self.makeparents(guest_path)
        host = self._node(guest_path)
        self._clean_temps(os.path.dirname(host))
        st = _lstat(host)
        if st is not None and stat.S_ISREG(st.st_mode):
            same = st.st_size == len(data) and read_regular(host) == data
            if same:
                return self.set_attrs(guest_path, mode, uid, gid)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"{guest_path!r} is a directory")
        atomic_write(
            host,
            data,
            mode=mode,
            uid=uid if self.can_chown else None,
            gid=gid if self.can_chown else None,
            sync=self._deferred is None,
            root=self.root,
        )
        if self._deferred is not None:
            self._durable(host, os.path.dirname(host))
        if mode & 0o7000:
            os.chmod(host, mode)  # the fchown inside atomic_write cleared set-id bits
        return True

    def read_bytes_nofollow(self, guest_path: str) -> bytes | None:
        """Contents of a regular file at exactly this path (not through a final symlink)."""
        host = self.host_str(guest_path)
        st = _lstat(host)
        if st is None or not stat.S_ISREG(st.st_mode):
            return None
        return read_regular(host)

    def set_attrs(self, guest_path: str, mode: int | None, uid: int | None, gid: int | None) -> bool:
        """chown/chmod an existing node (not through a final symlink); True when anything changed.

        chown comes first: it clears set-id bits, which the chmod then puts back.
        """
        host = self._node(guest_path)
        st = os.lstat(host)
        changed = False
        _check_links(self, guest_path, st, mode, uid, gid)
        want_uid = st.st_uid if uid is None else uid
        want_gid = st.st_gid if gid is None else gid
        if self.can_chown and (st.st_uid, st.st_gid) != (want_uid, want_gid):
            os.lchown(host, want_uid, want_gid)
            st = os.lstat(host)
            changed = True
        if mode is not None and not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) != mode:
            os.chmod(host, mode)
            changed = True
        return changed

    def symlink(self, guest_path: str, target: str, uid: int | None = 0, gid: int | None = 0) -> bool:
        """Make ``guest_path`` a symlink to ``target`` (replacing a different link or a file)."""
        if not target or "\0" in target:
            raise UnsafePathError(f"{guest_path!r}: empty or invalid link target")
        self.makeparents(guest_path)
        host = Path(self._node(guest_path))
        self._clean_temps(host.parent)
        st = _lstat(host)
        if st is not None and stat.S_ISLNK(st.st_mode) and os.readlink(host) == target:
            return self.set_attrs(guest_path, None, uid, gid)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"{guest_path!r} is a directory; refusing to replace it with a link")
        self._forget()
        tmp = host.with_name(f".{host.name}.fpvm-tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(target, tmp)
        if self.can_chown and (uid is not None or gid is not None):
            os.lchown(tmp, -1 if uid is None else uid, -1 if gid is None else gid)
        os.replace(tmp, host)
        self._durable("", host.parent)
        return True

    def hardlink(self, guest_path: str, target: str) -> bool:
        """Hard link ``guest_path`` to the guest path ``target`` (both inside the root)."""
        _not_root(guest_path)
        src = self._node(target)
        self.makeparents(guest_path)
        host = Path(self._node(guest_path))
        self._clean_temps(host.parent)
        st = _lstat(host)
        src_st = os.lstat(src)
        if st is not None and (st.st_dev, st.st_ino) == (src_st.st_dev, src_st.st_ino):
            return False
        self._forget()
        tmp = host.with_name(f".{host.name}.fpvm-tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.link(src, tmp, follow_symlinks=False)
        os.replace(tmp, host)
        self._durable("", host.parent)
        return True

    def remove(self, guest_path: str) -> bool:
        """Remove a file or link (not a directory tree)."""
        host = Path(self._node(guest_path))
        self._forget()
        try:
            os.unlink(host)
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            os.rmdir(host)
        self._durable("", host.parent)
        return True

    def _clean_temps(self, directory: str | os.PathLike[str]) -> None:
        """Remove what a killed earlier run left in ``directory`` (once per directory and run)."""
        key = os.fspath(directory)
        if key not in self._cleaned:
            self._cleaned.add(key)
            clean_stale_temps(key, self._started)


def _lstat(host: str | Path) -> os.stat_result | None:
    try:
        return os.lstat(host)
    except FileNotFoundError:
        return None


def _check_links(
    fs: RootFS, guest_path: str, st: os.stat_result, mode: int | None, uid: int | None, gid: int | None
) -> None:
    """Refuse a mode/owner change of a multiply linked file in a staged root.

    A hard link planted in a staged root (its other name outside the root) would carry the change out
    of the root. On the live system every name is inside the root, so only staged roots refuse.
    """
    if fs.is_live or stat.S_ISDIR(st.st_mode) or st.st_nlink <= 1:
        return
    wants_mode = mode is not None and not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) != mode
    wants_owner = fs.can_chown and (
        (uid is not None and uid != st.st_uid) or (gid is not None and gid != st.st_gid)
    )
    if wants_mode or wants_owner:
        raise UnsafePathError(
            f"{guest_path!r} has {st.st_nlink} hard links; its mode/owner is not changed in a staged root "
            "(another name may be outside the root)"
        )
