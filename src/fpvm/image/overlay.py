"""The overlay: every file fpvm adds on top of FreeBSD's packages, as data.

``entries()`` lists the tree; ``write()`` puts it under a root (a staging directory during a build,
any directory for ``fpvm image overlay DIR`` so people can review it). The rc.d script and the
linux-compat launchers belong to the guest agent and come from ``fpvm.guest``; everything else is
rendered from the recipe's tables.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fpvm import arch as archmod
from fpvm.fsutil import atomic_write, fsync_dir, read_regular, temp_path
from fpvm.image import recipe as rcp


class OverlayError(RuntimeError):
    """The overlay cannot be assembled or written."""


@dataclass(frozen=True)
class Entry:
    """One path of the overlay: a regular file (``data``) or a symbolic link (``target``)."""

    path: str
    data: bytes | None = None
    mode: int = 0o644
    target: str | None = None

    @property
    def is_link(self) -> bool:
        return self.target is not None


# /etc/tmpfiles.d must exist: podman 4.9+/5.x's rootful start runs `bash -c 'echo ... > /etc/tmpfiles.d/...'`.
TMPFILES_README = (
    b"systemd-tmpfiles(8) lines, as on Linux. fpvm applies the L/L+ (symlink) lines of *.conf here at\n"
    b"every boot and on `systemd-tmpfiles --create` (fpvm.guest.compat.tmpfiles); other types are skipped.\n"
)


def shell_assignments(values: dict[str, str]) -> bytes:
    """``name="value"`` lines, the form rc.conf(5) and loader.conf(5) both parse.

    Values that would need escaping are refused rather than quoted: neither file is a full shell
    (the loader reads loader.conf with its own parser), so keep to what both read identically.
    """
    lines = []
    for name, value in values.items():
        if any(c in value for c in '"\\$`\n'):
            raise OverlayError(f"value of {name} cannot be written as a quoted assignment: {value!r}")
        lines.append(f'{name}="{value}"\n')
    return "".join(lines).encode()


def sshd_dropin(release: rcp.Release) -> bytes:
    head = "# fpvm: what podman needs of sshd (read first through the Include line of sshd_config).\n"
    return (head + "".join(f"{k} {v}\n" for k, v in rcp.sshd_options(release).items())).encode()


def sudoers() -> bytes:
    """Only the search path: who may use sudo is the guest agent's file (fpvm.guest.sudoers)."""
    return (
        "# fpvm: commands podman runs through sudo find the linux-compat launchers first.\n"
        f'Defaults secure_path="{rcp.GUEST_PATH}"\n'
    ).encode()


PF_CONF = b"""\
# fpvm: NAT and port redirections for podman's networks (the podman port's pf.conf.sample).
v4egress_if = "vtnet0"
v6egress_if = "vtnet0"

nat on $v4egress_if inet from <cni-nat> to any -> ($v4egress_if)
nat on $v6egress_if inet6 from <cni-nat> to !ff00::/8 -> ($v6egress_if)

nat-anchor "cni-rdr/*"
rdr-anchor "cni-rdr/*"
table <cni-nat>
"""

# rc.d/sysctl reads /etc/sysctl.conf and /etc/sysctl.conf.local only (no sysctl.conf.d).
SYSCTL_CONF = b"""\
# fpvm: let pf redirect connections made from the guest itself to published container ports.
net.pf.filter_local=1
"""

FSTAB = b"""\
# fpvm: file systems by GPT label (the partition names mkimg gives them).
# Device\t\tMountpoint\tFStype\tOptions\t\tDump\tPass
/dev/gpt/rootfs\t\t/\t\tufs\trw,noatime\t1\t1
/dev/gpt/efiboot0\t/boot/efi\tmsdosfs\trw\t\t2\t2
fdesc\t\t\t/dev/fd\t\tfdescfs\trw\t\t0\t0
"""

# ZFS: no line for "/" (vmimage.subr writes none for VMFS=zfs): the kernel mounts the pool's bootfs
# and rc.d/zfs mounts the other datasets by their mountpoint property.
FSTAB_ZFS = b"""\
# fpvm: the root and the other file systems are datasets of the pool zroot (zfs list);
# the ESP by GPT label (the partition name mkimg gives it).
# Device\t\tMountpoint\tFStype\tOptions\t\tDump\tPass
/dev/gpt/efiboot0\t/boot/efi\tmsdosfs\trw\t\t2\t2
fdesc\t\t\t/dev/fd\t\tfdescfs\trw\t\t0\t0
"""


def storage_conf(fs: str) -> bytes:
    """containers-storage.conf(5) as FreeBSD's podman port reads it (/usr/local/etc/containers).

    UFS: the vfs driver (a full copy per layer and per container). ZFS: the zfs driver on the
    containers dataset; ``fsname`` names it so the driver never guesses from the mount table.
    """
    driver = rcp.storage_driver(fs)
    if fs == "zfs":
        head = f"# fpvm: the root is the ZFS pool {rcp.ZFS_POOL}: each image layer is a dataset of "
        head += f"{rcp.CONTAINERS_DATASET}\n# and each container a clone of its image, whatever its size.\n"
    else:
        head = "# fpvm: the root file system is UFS, so containers/storage uses its vfs driver.\n"
    text = (
        f'{head}[storage]\ndriver = "{driver}"\nrunroot = "/var/run/containers/storage"\n'
        f'graphroot = "{rcp.CONTAINERS_MOUNT}/storage"\n'
    )
    if fs == "zfs":
        text += f'\n[storage.options.zfs]\nfsname = "{rcp.CONTAINERS_DATASET}"\n'
    return text.encode()


GROWFS_RC = b"""\
#!/bin/sh
#
# fpvm: grow the root partition and file system at every boot. rc.d/growfs is
# "KEYWORD: firstboot"; podman (qemu-img resize) and users enlarge the disk later.

# PROVIDE: fpvm_growfs
# REQUIRE: FILESYSTEMS
# BEFORE: fpvm
# KEYWORD: nojail

. /etc/rc.subr

name="fpvm_growfs"
desc="Grow the root file system to fill its disk"
rcvar="growfs_enable"
start_cmd="fpvm_growfs_start"
stop_cmd=":"

fpvm_growfs_start()
{
\tif [ -e "${firstboot_sentinel}" ]; then
\t\treturn 0
\tfi
\t/etc/rc.d/growfs onestart
}

load_rc_config growfs
run_rc_command "$1"
"""


# The ARC cap (zfs only). vfs.zfs.arc.max is writable at run time (zfs(4), zfs_arc_max: "can be changed
# dynamically"), so it is set from the memory this boot has -- podman machine set --memory changes that
# without a new image, which a loader.conf value could not follow. It runs before containers start,
# while the ARC holds only what the boot read (lowering the cap does not shrink a full ARC at once).
ARC_RC = b"""\
#!/bin/sh
#
# fpvm: cap the ZFS ARC at a share of this VM's memory, so that containers keep
# the rest. zfs(4): vfs.zfs.arc.max (zfs_arc_max) can be changed at run time.

# PROVIDE: fpvm_arc
# REQUIRE: FILESYSTEMS
# BEFORE: fpvm podman podman_service
# KEYWORD: nojail

. /etc/rc.subr

name="fpvm_arc"
desc="Cap the ZFS ARC from the memory size"
rcvar="fpvm_arc_enable"
start_cmd="fpvm_arc_start"
stop_cmd=":"

# fpvm_arc_size MEMORY: the cap in bytes: fpvm_arc_percent of MEMORY, at least
# fpvm_arc_min_mib MiB, at most half of MEMORY (the cap must stay below all memory).
fpvm_arc_size()
{
\tlocal mem pct min cap
\tmem=$1
\tpct=${fpvm_arc_percent:-25}
\tmin=$(( ${fpvm_arc_min_mib:-256} * 1048576 ))
\tcap=$(( mem / 100 * pct ))
\tif [ "${cap}" -lt "${min}" ]; then
\t\tcap=${min}
\tfi
\tif [ "${cap}" -gt $(( mem / 2 )) ]; then
\t\tcap=$(( mem / 2 ))
\tfi
\techo "${cap}"
}

fpvm_arc_start()
{
\tlocal mem cap
\tif ! sysctl -n vfs.zfs.arc.max >/dev/null 2>&1; then
\t\treturn 0
\tfi
\tif [ -n "${fpvm_arc_max}" ]; then
\t\tcap=${fpvm_arc_max}
\telse
\t\tmem=$(sysctl -n hw.physmem) || return 1
\t\tcap=$(fpvm_arc_size "${mem}")
\tfi
\tsysctl vfs.zfs.arc.max="${cap}" >/dev/null
}

load_rc_config $name
run_rc_command "$1"
"""


# The fpvm command in the guest; the package itself is unpacked into site-packages by the build.
FPVM_LAUNCHER = f"""\
#!{rcp.PYTHON}
import sys

from fpvm.cli import main

sys.exit(main())
""".encode()


def _guest_rc() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The guest agent's rc.d scripts (name -> text) and the rc.conf.d settings that enable them."""
    from fpvm.guest import rcd

    try:
        scripts = {name: rcd.script_text(name).decode() for name in rcd.SCRIPTS}
    except (KeyError, OSError) as exc:  # package data missing from an incomplete install
        raise OverlayError(f"the guest's rc.d scripts are not available (fpvm.guest.rcd: {exc})") from None
    conf = {svc: {k: v for k, v in values.items() if v is not None} for svc, values in rcd.RC_CONF.items()}
    if "fpvm" not in scripts:
        raise OverlayError("fpvm.guest.rcd has no rc.d script named fpvm")
    return scripts, conf


def _compat_launchers() -> dict[str, str]:
    """linux-compat launchers, owned by the guest agent (``fpvm.guest.compat.launchers``)."""
    from fpvm.guest.compat import launchers

    return dict(launchers())


def entries(
    arch: str,
    release: rcp.Release | None = None,
    hostname: str = "fpvm",
    guest_rc: Callable[[], tuple[dict[str, str], dict[str, dict[str, str]]]] | None = None,
    compat: Callable[[], dict[str, str]] | None = None,
    fs: str = rcp.DEFAULT_FS,
) -> list[Entry]:
    """The whole overlay for ``arch`` and root file system ``fs`` (zfs or ufs).

    ``guest_rc`` and ``compat`` default to the guest agent's own.
    """
    if fs not in rcp.FILESYSTEMS:
        raise OverlayError(f"unknown file system {fs!r}: use one of {', '.join(rcp.FILESYSTEMS)}")
    scripts, guest_conf = (guest_rc or _guest_rc)()
    compat = compat or _compat_launchers
    arch = archmod.normalize(arch)
    release = release or rcp.parse_release(rcp.DEFAULT_RELEASE)
    out: list[Entry] = []
    services = rcp.rc_conf(hostname, fs)
    for service, values in guest_conf.items():
        services[service] = {**services.get(service, {}), **values}
    for service, values in services.items():
        out.append(Entry(f"/etc/rc.conf.d/{service}", shell_assignments(values)))
    for name, values in rcp.loader_conf(arch, fs).items():
        out.append(Entry(f"/boot/loader.conf.d/{name}.conf", shell_assignments(values)))
    out += [
        Entry("/etc/ssh/sshd_config.d/fpvm.conf", sshd_dropin(release)),
        Entry("/usr/local/etc/sudoers.d/fpvm", sudoers(), 0o440),
        Entry("/etc/pf.conf", PF_CONF),
        Entry("/etc/sysctl.conf.local", SYSCTL_CONF),
        Entry("/etc/fstab", FSTAB_ZFS if fs == "zfs" else FSTAB),
        Entry("/usr/local/etc/containers/storage.conf", storage_conf(fs)),
        Entry("/firstboot", b""),
        Entry("/etc/tmpfiles.d/README", TMPFILES_README),  # the folder podman writes podman-docker.conf to
        Entry("/run", target="var/run"),
        Entry("/usr/bin/bash", target="/usr/local/bin/bash"),
        Entry("/usr/local/etc/rc.d/fpvm_growfs", GROWFS_RC, 0o555),
        Entry("/usr/local/bin/fpvm", FPVM_LAUNCHER, 0o755),
    ]
    if fs == "zfs":
        out.append(Entry("/usr/local/etc/rc.d/fpvm_arc", ARC_RC, 0o555))
    for name, text in sorted(scripts.items()):
        if "/" in name or name in ("", ".", "..", "fpvm_growfs", "fpvm_arc"):
            raise OverlayError(f"bad rc.d script name {name!r}")
        out.append(Entry(f"/usr/local/etc/rc.d/{name}", text.encode(), 0o555))
    for name, text in sorted(compat().items()):
        if "/" in name or name in ("", ".", ".."):
            raise OverlayError(f"bad linux-compat launcher name {name!r}")
        out.append(Entry(f"{rcp.COMPAT_DIR}/{name}", text.encode(), 0o755))
    return out


def _inside(root: Path, guest_path: str) -> Path:
    """Map a guest path under ``root``; refuse parents that are symlinks (they could leave it)."""
    rel = PurePosixPath(guest_path).relative_to("/")
    if ".." in rel.parts:
        raise OverlayError(f"path leaves the root: {guest_path}")
    current = root
    for part in rel.parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise OverlayError(f"{current} is a symbolic link; refusing to write through it")
    return root.joinpath(*rel.parts)


# -- write: plan every entry, then prepare, then commit (all or nothing) -------------------------------
MAX_LISTED = 5  # problems named in the one-line error; the rest are counted


@dataclass(frozen=True)
class _Old:
    """A node the overlay replaces, kept to put it back if a later rename fails."""

    data: bytes  # contents of a file, or the target of a symbolic link (os.fsencode)
    link: bool
    mode: int = 0
    uid: int = -1
    gid: int = -1


@dataclass(frozen=True)
class _Change:
    """One entry that changes the tree: where it lands and what was there (for a rollback)."""

    entry: Entry
    dest: Path
    old: _Old | None  # what the entry replaces; None: nothing is there


def _same_file(dest: Path, st: os.stat_result, data: bytes, mode: int) -> bool:
    """A regular file that already has these bytes and this mode (read without following or blocking)."""
    if st.st_size != len(data) or stat.S_IMODE(st.st_mode) != mode:
        return False
    return read_regular(dest) == data


class _Planner:
    """Checks every precondition of every entry against the tree as it is plus what the batch adds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[str] = []
        self.mkdirs: list[Path] = []  # directories to create, parents first
        self.changes: list[_Change] = []
        self.kinds: dict[Path, str] = {}  # host path -> "dir" | "file" | "link" as the batch leaves it
        self.parents: set[Path] = set()  # existing directories that get a new name

    def fail(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)

    def directory(self, path: Path) -> bool:
        """``path`` must be (or become) a directory; plan its creation when it is missing."""
        kind = self.kinds.get(path)
        if kind is not None:
            if kind != "dir":
                self.fail(f"{path} is needed as a directory but the overlay also writes it as a {kind}")
                return False
            return True
        inside = path != self.root and self.root in path.parents
        if inside and not self.directory(path.parent):  # name the first obstacle, not a symptom
            return False
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if not inside and path.parent != path and not self.directory(path.parent):
                return False
            self.mkdirs.append(path)
            self.kinds[path] = "dir"
            self.parents.add(path.parent)
            return True
        except OSError as exc:
            if isinstance(exc, NotADirectoryError) and not inside and not self.directory(path.parent):
                return False  # named the file in the way above DIR
            self.fail(f"{path}: {exc.strerror}")
            return False
        if stat.S_ISLNK(st.st_mode) and inside:
            self.fail(f"{path} is a symbolic link; refusing to write through it")
            return False
        if not inside:  # DIR itself and the folders above it are the user's: their links are followed
            try:
                st = os.stat(path)
            except OSError as exc:
                self.fail(f"{path}: {exc.strerror}")
                return False
        if not stat.S_ISDIR(st.st_mode):
            self.fail(f"{path} exists and is not a directory")
            return False
        self.kinds[path] = "dir"
        return True

    def entry(self, item: Entry) -> None:
        rel = PurePosixPath(item.path)
        parts = rel.parts[1:] if rel.is_absolute() else ()
        if not parts or any(p in ("", ".", "..") for p in parts) or "\0" in item.path:
            self.fail(f"{item.path!r}: not a path under the root (the root itself and '..' are refused)")
            return
        dest = self.root.joinpath(*parts)
        kind = "link" if item.is_link else "file"
        if dest in self.kinds:
            if self.kinds[dest] == "dir":
                self.fail(f"{dest} is needed as a directory but the overlay also writes it as a {kind}")
            else:
                self.fail(f"{dest}: more than one overlay entry writes it")
            return
        if not self.directory(dest.parent):
            return
        self.parents.add(dest.parent)
        self.kinds[dest] = kind
        try:
            st: os.stat_result | None = os.lstat(dest)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            self.fail(f"{dest}: {exc.strerror}")
            return
        old: _Old | None = None
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                what = "symbolic link" if item.is_link else "file"
                self.fail(f"{dest} is a directory; the overlay writes a {what} there")
                return
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(dest)
                if item.target is not None and target == item.target:
                    return
                old = _Old(os.fsencode(target), True)
            elif not stat.S_ISREG(st.st_mode):
                self.fail(f"{dest} exists and is not a regular file or a symbolic link")
                return
            elif item.target is not None:
                self.fail(f"{dest} exists and is not a symbolic link")
                return
            else:
                try:
                    if _same_file(dest, st, item.data or b"", item.mode):
                        return
                    old = _Old(read_regular(dest), False, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
                except OSError as exc:
                    self.fail(f"{dest}: cannot read it: {exc.strerror}")
                    return
        self.changes.append(_Change(item, dest, old))

    def check_writable(self) -> None:
        """Every existing directory that gets a new name must let us create it."""
        for parent in sorted(self.parents):
            if parent in self.mkdirs:
                continue
            if not os.access(parent, os.W_OK | os.X_OK):
                self.fail(f"{parent} is not writable")

    def error(self) -> OverlayError:
        shown = "; ".join(self.problems[:MAX_LISTED])
        more = len(self.problems) - MAX_LISTED
        tail = f" (and {more} more)" if more > 0 else ""
        return OverlayError(f"{shown}{tail}; nothing was written")


def plan_write(root: Path, items: Iterable[Entry]) -> _Planner:
    """Check every entry against the tree under ``root`` before anything is written.

    Preconditions: ``root`` is not the running system's own root (unless inside the fpvm VM, see
    fpvm.hostroot); every parent is a directory or can be created (no symbolic link, file or
    other node in the way, no directory the overlay also writes as a file); no file or link would
    replace a directory, a link would not replace a file, nothing but a regular file or a symbolic
    link is replaced; every directory that gets a new name is writable; each path appears once.
    """
    from fpvm.hostroot import HostRootError, refuse_system_root

    try:
        refuse_system_root(root)
    except HostRootError as exc:
        raise OverlayError(str(exc)) from None
    root = Path(os.path.abspath(root))
    planner = _Planner(root)
    if planner.directory(root):
        for item in items:
            planner.entry(item)
        planner.check_writable()
    if planner.problems:
        raise planner.error()
    return planner


def _stage(dest: Path, data: bytes | None, mode: int, target: str | None) -> Path:
    """A temporary node beside ``dest`` with its final contents (fsynced), ready to be renamed over it."""
    tmp = temp_path(dest)
    if target is not None:
        os.symlink(target, tmp)
        return tmp
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data or b"")
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def write(root: Path, items: Iterable[Entry]) -> list[str]:
    """Write ``items`` under ``root``, all or nothing; returns the guest paths that changed.

    ``plan_write`` checks every precondition first and raises OverlayError naming each problem under
    ``root`` (``/tmp/ov/etc/fstab``); then every new directory and every file's new contents are
    staged as temporary files beside their targets, and only when all of them exist are they renamed
    into place. A failure while staging removes what was staged; a failure while renaming puts back
    what had been replaced. A second run changes nothing (and returns []).
    """
    plan = plan_write(root, items)
    made: list[Path] = []
    staged: list[tuple[_Change, Path]] = []
    done: list[_Change] = []
    try:
        for directory in plan.mkdirs:
            os.mkdir(directory, 0o755)
            made.append(directory)
        for change in plan.changes:
            item = change.entry
            staged.append((change, _stage(change.dest, item.data, item.mode, item.target)))
        for change, tmp in staged:
            os.replace(tmp, change.dest)
            done.append(change)
    except OSError as exc:
        trouble = _undo(made, staged, done)
        where = f" ({exc.filename})" if exc.filename else ""
        state = f"; could not undo: {'; '.join(trouble)}" if trouble else "; nothing was changed"
        failed = f"writing the overlay under {plan.root} failed: {exc.strerror}{where}"
        raise OverlayError(failed + state) from None
    for directory in sorted({c.dest.parent for c in done} | {d.parent for d in made}):
        fsync_dir(directory)
    return [c.entry.path for c in done]


def _undo(made: list[Path], staged: list[tuple[_Change, Path]], done: list[_Change]) -> list[str]:
    """Put the tree back as it was; returns what could not be undone (empty when all was)."""
    trouble: list[str] = []
    committed = {id(c) for c in done}
    for change in reversed(done):
        try:
            old = change.old
            if old is None:
                os.unlink(change.dest)
                continue
            if old.link:
                tmp = _stage(change.dest, None, 0, os.fsdecode(old.data))
            else:
                tmp = _stage(change.dest, old.data, old.mode, None)
                if os.geteuid() == 0:
                    os.chown(tmp, old.uid, old.gid)
                    os.chmod(tmp, old.mode)  # chown cleared set-id bits
            os.replace(tmp, change.dest)
        except OSError as exc:
            trouble.append(f"{change.dest}: {exc.strerror}")
    for change, tmp in staged:
        if id(change) not in committed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    for directory in reversed(made):
        try:
            os.rmdir(directory)
        except OSError as exc:
            trouble.append(f"{directory}: {exc.strerror}")
    return trouble


def apply_base_edits(root: Path) -> bool:
    """The one edit of a base file: make sshd read ``sshd_config.d`` (first values win, so on top)."""
    config = _inside(root, "/etc/ssh/sshd_config")
    if not config.is_file():
        raise OverlayError(f"{config} is missing: is FreeBSD-ssh installed in {root}?")
    text = config.read_text()
    if any(line.strip() == rcp.SSHD_INCLUDE for line in text.split("\n")):
        return False
    mode = config.stat().st_mode & 0o7777
    atomic_write(config, (rcp.SSHD_INCLUDE + "\n\n" + text).encode(), mode=mode)
    return True
