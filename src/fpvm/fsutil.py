"""Atomic file writes, shared by the guest agent and the host side. Standard library only.

A reader (podman, sshd, rc) must see either the old file or the new one, never a torn write, even if
the VM loses power: write a temporary file in the same directory, fsync it, rename it over the target,
then fsync the directory so the rename itself is durable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
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
    tmp = temp_path(target)
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


def temp_path(target: Path) -> Path:
    """A fresh temporary name beside ``target`` (``.NAME.<12 hex>.fpvm-tmp``, see ``is_own_temp``)."""
    return target.parent / f".{target.name}.{os.urandom(6).hex()}{TMP_SUFFIX}"


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


# -- bounded, type-checked access to files in a root the agent does not trust ---------------------------
MAX_READ = 64 * 1024 * 1024 + 4096  # the largest file the agent writes (64 MiB) plus room to tell


class SpecialFileError(OSError):
    """A path that must be a regular file is something else (FIFO, device, socket, link) or too big.

    An OSError, so every caller that already reports I/O errors reports this one too.
    """


def _nonblock() -> int:
    # O_NONBLOCK: opening a FIFO must not wait for a writer/reader; O_NOCTTY: a tty never becomes ours.
    return os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def open_regular(path: str | os.PathLike[str], *, follow: bool = False) -> tuple[int, os.stat_result]:
    """A read-only descriptor of the regular file ``path`` and its stat, for callers that stream it.

    The checks of :func:`read_regular` without the read: O_NONBLOCK, O_NOFOLLOW unless ``follow``, the
    type checked on the open descriptor. The caller closes the descriptor and bounds what it reads.
    """
    flags = os.O_RDONLY | _nonblock() | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", os.fspath(path))
        if not stat.S_ISREG(st.st_mode):
            raise SpecialFileError(f"{os.fspath(path)}: not a regular file ({_kind(st.st_mode)}); not read")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_regular(path: str | os.PathLike[str], limit: int = MAX_READ, *, follow: bool = False) -> bytes:
    """The bytes of the regular file ``path``: never a FIFO, device or socket, never more than ``limit``.

    Opened with O_NONBLOCK (a FIFO cannot hang us) and, unless ``follow``, O_NOFOLLOW (a final symlink
    is an error, ELOOP); the type is checked on the open descriptor (no race with a swap) before one
    byte is read, and at most ``limit + 1`` bytes are read: a larger file raises SpecialFileError
    instead of filling memory (/dev/zero, a sparse 1 TB file). FileNotFoundError passes through.
    """
    fd, st = open_regular(path, follow=follow)
    try:
        if st.st_size > limit:
            raise SpecialFileError(f"{os.fspath(path)}: {st.st_size} bytes, over the {limit}-byte limit")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise SpecialFileError(f"{os.fspath(path)}: larger than the {limit}-byte limit")
        return b"".join(chunks)
    finally:
        os.close(fd)


def append_regular(
    path: str | os.PathLike[str], data: bytes, mode: int = 0o640, *, single_link: bool = False
) -> None:
    """Append ``data`` to the regular file ``path`` (created with ``mode`` if absent), a log's way.

    O_NOFOLLOW + O_NONBLOCK + a type check on the descriptor: a planted symlink, FIFO (which would
    block a boot forever) or device at the path raises OSError instead of taking the data. With
    ``single_link`` a file with other hard links is refused too (in a staged root its other name may
    be outside the root).
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | _nonblock()
    fd = os.open(path, flags, mode)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _kind(st.st_mode)
            raise SpecialFileError(f"{os.fspath(path)}: not a regular file ({kind}); not written")
        if single_link and st.st_nlink > 1:
            raise SpecialFileError(f"{os.fspath(path)}: has {st.st_nlink} hard links; not written")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "not a regular file"


# -- temporary files left by a killed run ------------------------------------------------------------------
TMP_SUFFIX = ".fpvm-tmp"
MAX_CLEAN_SCAN = 100_000  # directory entries looked at per directory: bounded work on a huge directory


def is_own_temp(name: str) -> bool:
    """True for the names fpvm's writers use: ``.NAME.<12 hex>.fpvm-tmp`` and ``.NAME.fpvm-tmp``."""
    if not (name.startswith(".") and name.endswith(TMP_SUFFIX)) or len(name) <= len(TMP_SUFFIX) + 1:
        return False
    middle = name[1 : -len(TMP_SUFFIX)]
    return bool(middle) and middle != "."


def clean_stale_temps(directory: str | os.PathLike[str], before: float) -> int:
    """Remove fpvm's own temporary files in ``directory`` older than ``before`` (a time.time());
    returns how many were removed.

    A run killed between creating its temporary file and renaming it (SIGKILL, power loss) leaves
    ``.NAME.*.fpvm-tmp`` behind; nothing else ever removes it. Only regular files and symlinks with
    fpvm's name pattern go, only those last changed before this run began (a concurrent writer's file
    is younger), and at most MAX_CLEAN_SCAN entries are looked at.
    """
    removed = 0
    try:
        with os.scandir(directory) as it:
            for n, entry in enumerate(it):
                if n >= MAX_CLEAN_SCAN:
                    break
                if not is_own_temp(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)) or st.st_mtime >= before:
                        continue
                    os.unlink(entry.path)
                    removed += 1
                except OSError:
                    continue
    except OSError:
        return removed
    return removed


def sha256_hex(data: bytes) -> str:
    """sha256 without importing hashlib, which loads OpenSSL (milliseconds on every boot)."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]  # CPython 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]  # 3.12+
        except ImportError:
            from hashlib import sha256  # type: ignore[assignment,unused-ignore]
    return str(sha256(data).hexdigest())


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (disk images are gigabytes): the one file hasher."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
