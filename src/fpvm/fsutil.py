"""Atomic file writes, shared by the guest agent and the host side. Standard library only.

A reader (podman, sshd, rc) must see either the old file or the new one, never a torn write, even if
the VM loses power: write a temporary file in the same directory, fsync it, rename it over the target,
then fsync the directory so the rename itself is durable.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes,
    mode: int = 0o644,
    uid: int | None = None,
    gid: int | None = None,
    sync: bool = True,
    root: str | os.PathLike[str] | None = None,
) -> None:
    """Replace ``path`` with ``data``; mode and ownership are set before the file becomes visible.

    The caller is responsible for ``path`` being safe (inside the target root, parents not symlinks
    that escape it): this function only guarantees atomicity. ``sync=False`` skips both fsyncs for
    callers that write many files and call :func:`os.sync` once at the end (the guest's provision
    step): the rename stays atomic, only durability is deferred.

    Defence in depth: a path without a file name (``/``, ``DIR/..``) is refused, since its temporary
    file would land beside it; with ``root`` the file must also be strictly below ``root``
    (lexically: resolving links is the caller's job).
    """
    target = Path(path)
    if target.name in ("", ".", ".."):
        raise ValueError(f"{os.fspath(path)!r} names no file (a root or directory is never replaced)")
    if root is not None:
        base = os.path.normpath(os.path.abspath(root))
        parent = os.path.normpath(os.path.abspath(target.parent))
        if parent != base and not parent.startswith(base.rstrip("/") + "/"):
            raise ValueError(f"{os.fspath(path)!r} is not inside the root {base}")
    # Not tempfile.mkstemp: importing tempfile pulls in shutil, bz2, lzma and random, which costs the
    # guest's boot path more than all of its own work. O_EXCL with a random name is what mkstemp does.
    tmp = target.parent / f".{target.name}.{os.urandom(6).hex()}.fpvm-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            if uid is not None or gid is not None:
                os.fchown(fh.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(target.parent)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or unlink in ``path`` durable (a no-op where directories cannot be opened)."""
    fsync_path(path, getattr(os, "O_DIRECTORY", 0))


def fsync_path(path: str | os.PathLike[str], flags: int = getattr(os, "O_NOFOLLOW", 0)) -> None:
    """fsync(2) a file or directory by path; gone or unopenable means nothing to make durable."""
    try:
        fd = os.open(path, os.O_RDONLY | flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
