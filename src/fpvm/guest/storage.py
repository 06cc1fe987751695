"""Ignition's storage.files / directories / links, with the Linux -> FreeBSD path mapping.

Upstream semantics (Ignition ``internal/exec/stages/files``) kept where they make sense on a box that
re-applies its config at every boot:

* missing parents are created root-owned 0755 (podman lists each ``~/.config`` level because of this);
* a new file without ``mode`` is 0644, a directory 0755; an unset owner is root;
* ``overwrite: true`` replaces whatever is at the path; with ``overwrite: false`` an existing node that
  differs is *kept* and a warning says so (Ignition would fail the boot instead; an agent that runs at
  every boot must not, and must not clobber what the administrator changed since);
* ``append`` fragments are added once per file: the agent records (sha256 of each fragment, per path,
  in ``/var/db/fpvm/state.json``) what it appended and adds only fragments it has no record of, so a
  second run changes nothing and a changed fragment is appended (the earlier text stays). A file
  written afresh (absent, or replaced by ``overwrite`` + ``contents``) gets every fragment again.

The mapping table is ``classify``; ``fpvm ignition show`` and ``fpvm guest plan`` use the same code.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Any

from fpvm.guest.actions import Action, Disposition

if TYPE_CHECKING:
    from collections.abc import Callable

    from fpvm.guest.context import ApplyContext
    from fpvm.ignition.model import Directory, File, Link

CONTAINERS_LINUX = "/etc/containers"
CONTAINERS_FREEBSD = "/usr/local/etc/containers"
CERTS_LINUX = CONTAINERS_LINUX + "/certs.d"
# FreeBSD's podman (common/pkg/machine) looks for the machine marker at these exact Linux paths.
MARKERS = ("/etc/containers/podman-machine", "/etc/podman-machine")
PODMAN_LINUX = "/usr/bin/podman"
PODMAN_FREEBSD = "/usr/local/bin/podman"
LINK_TARGETS = {PODMAN_LINUX: PODMAN_FREEBSD}  # link targets: Linux binaries that live elsewhere on FreeBSD
LOCALTIME = "/etc/localtime"
HOSTNAME = "/etc/hostname"
ZONEINFO_NAME = "/var/db/zoneinfo"  # tzsetup(8) records the zone name here

# Linux-only places: recorded in the plan and skipped.
LINUX_ONLY: tuple[tuple[str, str], ...] = (
    ("/etc/systemd", "systemd configuration"),
    ("/usr/lib/systemd", "systemd configuration"),
    ("/var/lib/systemd", "systemd state (linger)"),
    ("/usr/lib/tmpfiles.d", "systemd-tmpfiles"),
    ("/etc/sysctl.d", "Linux sysctl"),
    ("/etc/chrony.conf", "chrony (FreeBSD uses ntpd)"),
    ("/etc/chrony.d", "chrony (FreeBSD uses ntpd)"),
    ("/etc/environment.d", "systemd environment.d"),
    ("/etc/NetworkManager", "NetworkManager"),
    ("/etc/modules-load.d", "Linux kernel modules"),
    ("/etc/udev", "udev"),
    ("/etc/selinux", "SELinux"),
    # podman 4.9 on a macOS host: run only by net-health-recovery.service (skipped, see fpvm.guest.systemd);
    # it bounces Fedora's enp0s1, an interface FreeBSD does not have.
    (
        "/usr/local/bin/net-health-recovery.sh",
        "network recovery script of net-health-recovery.service (bounces Fedora's enp0s1)",
    ),
)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


class Placement:
    """Where a config path goes on FreeBSD: the guest paths to write, or why it is skipped."""

    __slots__ = ("disposition", "note", "paths")

    def __init__(self, disposition: Disposition, paths: tuple[str, ...], note: str = "") -> None:
        self.disposition: Disposition = disposition
        self.paths = paths
        self.note = note


def classify(path: str) -> Placement:
    """The FreeBSD placement of an Ignition storage path (files, directories and links alike)."""
    for prefix, why in LINUX_ONLY:
        if _under(path, prefix):
            return Placement("ignore", (), f"Linux-only: {why}")
    if "/.config/systemd/" in path + "/":
        return Placement("ignore", (), "Linux-only: systemd user units")
    if path == HOSTNAME:
        return Placement("translate", (), "hostname goes to /etc/rc.conf.d/hostname")
    if not _under(path, CONTAINERS_LINUX):
        return Placement("apply", (path,))  # also the marker /etc/podman-machine
    mapped = CONTAINERS_FREEBSD + path[len(CONTAINERS_LINUX) :]
    if path in MARKERS:
        return Placement(
            "translate", (path, mapped), "machine marker: Linux path (podman reads it) + FreeBSD"
        )
    if _under(path, CERTS_LINUX):
        # podman 4.x-5.8 also sets SSL_CERT_FILE/SSL_CERT_DIR to these Linux paths (fw_cfg environment,
        # /etc/profile.d/podman-machine-ssl.sh): keep them valid beside the FreeBSD copy podman reads.
        return Placement(
            "translate", (mapped, path), "certificates: FreeBSD path (podman) + Linux path (SSL_CERT_*)"
        )
    return Placement("translate", (mapped,), f"FreeBSD's podman reads {CONTAINERS_FREEBSD}")


class RootRefused(Action):
    """An entry whose path (or hard-link target) is the root itself: refused in the plan.

    ``/`` passes Ignition's validation, but a file, directory or link there would replace, re-own or
    write beside the root. The entry is shown by ``fpvm guest plan`` and fails when applied (naming
    its JSON path); the rest of the config applies.
    """

    kind = "refused"

    def __init__(self, path: str, where: str) -> None:
        super().__init__(where, "ignore", "the root itself is never replaced, re-owned or written beside")
        self.path = path

    def describe(self) -> str:
        return f"refuse {self.source} = {self.path!r}: {self.note}"

    def fields(self) -> dict[str, Any]:
        return {"path": self.path}

    def apply(self, ctx: ApplyContext) -> bool:
        raise ValueError(f"{self.source}: {self.path!r} is the root itself, not a valid target; not applied")


# ------------------------------------------------------------------------------------------------
Owner = tuple[int | None, str | None]  # (id, name) as in Ignition's NodeUser/NodeGroup


def _resolve(owner: Owner, lookup: Callable[[str], int | None], kind: str, what: str) -> int:
    """An Ignition NodeUser/NodeGroup to a number: the id if given, else the name looked up, else root."""
    number, name = owner
    if number is not None:
        return number
    if not name:
        return 0
    found = lookup(name)
    if found is None:
        raise RuntimeError(f"{what}: {kind} {name!r} does not exist")
    return found


def _owner_text(owner: Owner) -> str:
    uid, name = owner
    return name if name else (str(uid) if uid is not None else "root")


class _Node(Action):
    """A file, directory or link of ``storage`` at ``path``, the FreeBSD place of the config's ``node``."""

    def __init__(
        self, path: str, node: File | Directory | Link, source: str, place: Placement, mode: int | None = None
    ) -> None:
        super().__init__(source, place.disposition, place.note)
        self.path = path
        self.user: Owner = (node.user.id, node.user.name)
        self.group: Owner = (node.group.id, node.group.name)
        self.mode = mode
        self.overwrite = bool(node.overwrite)
        self.config_path = node.path  # the path as the config wrote it

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path}
        if self.config_path != self.path:
            out["config_path"] = self.config_path
        out["owner"] = f"{_owner_text(self.user)}:{_owner_text(self.group)}"
        if self.mode is not None:
            out["mode"] = f"{self.mode:04o}"
        out["overwrite"] = self.overwrite
        return out

    def _ids(self, ctx: ApplyContext) -> tuple[int, int]:
        return (
            _resolve(self.user, ctx.accounts.uid_of, "user", self.path),
            _resolve(self.group, ctx.accounts.gid_of, "group", self.path),
        )

    def _suffix(self) -> str:
        extra = f" ({self.config_path})" if self.config_path != self.path else ""
        mode = f" {self.mode:04o}" if self.mode is not None else ""
        return f"{extra}{mode} {_owner_text(self.user)}:{_owner_text(self.group)}"


class FileAction(_Node):
    kind = "file"

    def __init__(
        self,
        path: str,
        node: File,
        source: str,
        place: Placement,
        contents: bytes | None,
        append: list[bytes],
    ) -> None:
        super().__init__(path, node, source, place, node.mode)
        self.contents = contents
        self.append = append

    def describe(self) -> str:
        size = "keep contents" if self.contents is None else f"{len(self.contents)} bytes"
        app = f" +{len(self.append)} append" if self.append else ""
        return f"file {self.path}{self._suffix()}: {size}{app}"

    def fields(self) -> dict[str, Any]:
        out = super().fields()
        out["size"] = None if self.contents is None else len(self.contents)
        if self.append:
            out["append_sizes"] = [len(a) for a in self.append]
        return out

    def apply(self, ctx: ApplyContext) -> bool:
        fs = ctx.root
        uid, gid = self._ids(ctx)
        st = fs.lstat(self.path)
        exists_regular = st is not None and stat.S_ISREG(st.st_mode)
        if st is not None and not exists_regular and not self.overwrite:
            ctx.log.warn(f"{self.path}: a non-regular file is there and overwrite is false; left as is")
            return False
        current = fs.read_bytes_nofollow(self.path) if exists_regular else None
        if self.contents is None:
            base = current if current is not None else b""
        elif current is None or current == self.contents or self.overwrite:
            base = self.contents
        else:
            # overwrite false and the file differs: keep it. A file that still starts with our
            # contents only lacks (or has) its append fragments, so it is not a conflict.
            if not current.startswith(self.contents):
                ctx.log.warn(f"{self.path}: exists with other contents and overwrite is false; left as is")
                return False
            base = current
        # A file written afresh (absent, or replaced by overwrite + contents) gets every fragment;
        # otherwise only the fragments the record says were never appended to it.
        fresh = current is None or (self.overwrite and self.contents is not None)
        data, record = _append_fragments(ctx, self.path, base, self.append, fresh)
        if st is not None and not exists_regular:
            fs.remove(self.path)
        mode = self.mode
        if mode is None:
            mode = stat.S_IMODE(st.st_mode) if st is not None and exists_regular else 0o644
        changed = fs.write(self.path, data, mode, uid, gid)
        if record is not None:
            _appended(ctx)[self.path] = record  # only once the bytes are written
        return changed


APPENDED = "appended"  # state.json key: guest path -> sha256 of each fragment fpvm appended there


def _appended(ctx: ApplyContext) -> dict[str, list[str]]:
    """The agent's record of appended fragments (kept in the state, /var/db/fpvm/state.json)."""
    record = ctx.state.get(APPENDED)
    if not isinstance(record, dict):
        record = {}
        ctx.state.set(APPENDED, record)
    return record


def _append_fragments(
    ctx: ApplyContext, path: str, base: bytes, fragments: list[bytes], fresh: bool
) -> tuple[bytes, list[str] | None]:
    """(new contents, new record for ``path`` or None when unchanged).

    Idempotence comes from the record, not from searching the file: a fragment that merely occurs in
    the file (``pre-existing`` holds ``exist``) is still appended once, and a fragment is never
    appended twice to the same file. A changed fragment is a new fragment: it is appended, the text
    appended before stays (fpvm does not edit what is already there). Each fragment counts once per
    occurrence in the config (``[A, A]`` appends A twice, as Ignition does).
    """
    fragments = [f for f in fragments if f]
    if not fragments:
        return base, None
    from fpvm.fsutil import sha256_hex

    known = _appended(ctx).get(path)
    before = [] if fresh or not isinstance(known, list) else [str(h) for h in known]
    unmatched = list(before)
    added: list[str] = []
    data = base
    for fragment in fragments:
        digest = sha256_hex(fragment)
        if digest in unmatched:
            unmatched.remove(digest)
            continue
        data += fragment
        added.append(digest)
    record = before + added
    return data, (record if record != known else None)


class DirectoryAction(_Node):
    kind = "directory"

    def describe(self) -> str:
        return f"directory {self.path}{self._suffix()}"

    def apply(self, ctx: ApplyContext) -> bool:
        fs = ctx.root
        uid, gid = self._ids(ctx)
        st = fs.lstat(self.path)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            if not self.overwrite:
                ctx.log.warn(f"{self.path}: a non-directory is there and overwrite is false; left as is")
                return False
            fs.remove(self.path)
            st = None
        if st is None:
            fs.makeparents(self.path)
            fs.makedirs(self.path, self.mode if self.mode is not None else 0o755, uid, gid)
            return True
        return fs.set_attrs(self.path, self.mode, uid, gid)


class LinkAction(_Node):
    kind = "link"

    def __init__(self, path: str, node: Link, source: str, place: Placement, target: str) -> None:
        super().__init__(path, node, source, place)
        self.target = target  # the config's target, mapped (LINK_TARGETS)
        self.hard = bool(node.hard)
        self.config_target = node.target or target
        self.force = node.path == LOCALTIME  # replaced even with overwrite false: a translated link

    def describe(self) -> str:
        arrow = "=>" if self.hard else "->"
        was = f" (config: {self.config_target})" if self.config_target != self.target else ""
        return f"link {self.path} {arrow} {self.target}{was}"

    def fields(self) -> dict[str, Any]:
        out = super().fields()
        out["target"] = self.target
        out["hard"] = self.hard
        if self.config_target != self.target:
            out["config_target"] = self.config_target
        return out

    def apply(self, ctx: ApplyContext) -> bool:
        fs = ctx.root
        uid, gid = self._ids(ctx)
        st = fs.lstat(self.path)
        if self.hard:
            return fs.hardlink(self.path, self.target)
        if self.path == LOCALTIME:
            zone = self.target if self.target.startswith("/") else "/etc/" + self.target
            try:
                # Only whether a zone file is there: never read it (a link to /dev/zero, a FIFO).
                zst = os.stat(fs.host_str(zone, follow_last=True), follow_symlinks=False)
                present = stat.S_ISREG(zst.st_mode)
            except (OSError, ValueError):
                present = False
            if not present:
                ctx.log.warn(f"{self.path}: time zone file {self.target} is not in the root")
        if st is not None:
            same = stat.S_ISLNK(st.st_mode) and fs.readlink(self.path) == self.target
            if not same and not (self.overwrite or self.force):
                ctx.log.warn(f"{self.path}: exists and overwrite is false; left as is")
                return False
            if stat.S_ISDIR(st.st_mode):
                ctx.log.warn(f"{self.path}: is a directory; not replaced by a link")
                return False
        return fs.symlink(self.path, self.target, uid, gid)


class TmpfilesCreate(Action):
    """``systemd-tmpfiles --create`` at every boot: the L/L+ links of /etc/tmpfiles.d/*.conf.

    Fedora CoreOS makes ``/run/docker.sock`` from podman's ``podman-docker.conf`` at each boot
    (systemd-tmpfiles-setup.service); FreeBSD's cleanvar empties /var/run at boot, so the agent
    re-creates the links each time, with the same translation as the ``systemd-tmpfiles`` shim. The
    file podman rewrites after ``podman machine set --rootful`` is read here too (the config's own copy
    has no ``overwrite`` and does not replace it).
    """

    kind = "tmpfiles"

    def __init__(self, source: str = "") -> None:
        super().__init__(source, "translate", "systemd-tmpfiles --create: L/L+ lines become symlinks")

    def describe(self) -> str:
        return "create the symlinks of /etc/tmpfiles.d/*.conf (systemd-tmpfiles --create)"

    def apply(self, ctx: ApplyContext) -> bool:
        import io

        from fpvm.guest.compat.base import Shim
        from fpvm.guest.compat.tmpfiles import create_links

        shim = Shim("systemd-tmpfiles", ctx.root, ctx.runner, err=io.StringIO())
        status, changed = create_links(shim, [], [], [])
        for line in shim.lines:
            ctx.log.info(line.split(" ", 1)[1] if " " in line else line)
        if status:
            ctx.log.warn("systemd-tmpfiles --create: some lines could not be applied (see above)")
        return bool(changed)
