"""Config -> plan: the ordered list of actions that provisions a FreeBSD root.

Everything that can be wrong with the config is found here, before anything is applied (user names
pw would reject, paths with ``..``): ``build_plan`` raises ``PlanError`` listing every problem with
its JSON path, and the caller applies nothing. File contents are read here too, through the one
resource layer (``fpvm.ignition.resources``); a file whose contents cannot be fetched, decoded,
decompressed or verified becomes an ``UnreadableFile`` action: that file is never written, its error
names the JSON path, and the rest of the config still applies.

Order follows Ignition's stages: groups, users (then their keys and sudo), files/directories/links
sorted by depth (hard links last), then the FreeBSD side of the systemd units and mounts, which
belong to other modules (``fpvm.guest.systemd``, ``fpvm.guest.mounts``) and are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fpvm.guest import passwd, storage
from fpvm.guest.actions import Action, Note
from fpvm.guest.rootfs import RootFS, UnsafePathError, split_guest_path
from fpvm.guest.sshkeys import AuthorizedKeys, check_key
from fpvm.guest.sudoers import SudoersFile

TMPFILES_D = "/etc/tmpfiles.d"
MAX_FILE_SIZE = 64 * 1024 * 1024  # per file, after decompression (resources.MAX_RESOURCE_BYTES)

if TYPE_CHECKING:
    from fpvm.guest.context import ApplyContext
    from fpvm.ignition.model import Config, Resource
    from fpvm.ignition.resources import Budget
    from fpvm.ignition.sources import FetchOptions


class PlanError(ValueError):
    """The config cannot be applied; ``problems`` are (JSON path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))


class PlanOptions:
    """How to plan: against which root, with which limits and fetcher."""

    def __init__(
        self,
        root: RootFS | None = None,
        max_file_size: int = MAX_FILE_SIZE,
        fetch_remote: bool = True,
        budget: Budget | None = None,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.root = root  # lets unit/mount planning read the root (fpvm's mount table)
        self.max_file_size = max_file_size  # per file, after decompression
        self.fetch_remote = fetch_remote  # False for `show`: remote contents are described, not fetched
        # fpvm.ignition.resources.Budget: the boot's one fetching deadline (provision passes the one
        # resolve used); None: a new one when the first remote source needs it
        self.budget = budget
        self.fetch_options: FetchOptions | None = None  # made for the first http(s) source (imports ssl)
        self.environment = environment  # podman 4.x's fw_cfg proxy entry, decoded
        self.config: Config | None = None  # set by build_plan: its fetch settings apply to its resources


class _Builder:
    def __init__(self, opts: PlanOptions) -> None:
        self.opts = opts
        self.actions: list[Action] = []
        self.problems: list[tuple[str, str]] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append((where, message))


# -- resources --------------------------------------------------------------------------------------
class ResourceError(ValueError):
    pass


class UnreadableFile(Action):
    """A file whose contents or an append could not be fetched, decoded or verified: never written.

    It stands in the file's place so that the rest of the config still applies: provision reports it
    as failed (exit status 2, the error names the JSON path), and because the run is incomplete the
    next boot provisions again (a dead server may be back by then).
    """

    kind = "file"

    def __init__(self, path: str, error: str, source: str) -> None:
        super().__init__(source)
        self.path = path
        self.error = error

    def describe(self) -> str:
        return f"file {self.path}: cannot be read: {self.error}"

    def fields(self) -> dict[str, Any]:
        return {"path": self.path, "error": self.error}

    def apply(self, ctx: ApplyContext) -> bool:
        raise ValueError("not written")


def _fetch_options(opts: PlanOptions) -> FetchOptions:
    """http(s) settings: the config's own ``ignition.timeouts``, ``proxy`` and CAs, as upstream's.

    Built once per plan and only for a remote source (it imports http/ssl), with the plan's budget.
    """
    if opts.fetch_options is None:
        from dataclasses import replace

        from fpvm.ignition.sources import FetchOptions, options_from_config

        base = FetchOptions(max_bytes=opts.max_file_size)
        if opts.budget is not None:
            base = replace(base, budget=opts.budget)
        opts.budget = base.budget
        opts.fetch_options = options_from_config(opts.config, base) if opts.config is not None else base
    return opts.fetch_options


def resource_bytes(resource: Resource, opts: PlanOptions) -> bytes | None:
    """The bytes of an Ignition Resource; None when it has no source (or is remote and not fetched).

    Everything (data: URL, http(s), gzip, the size limit, ``verification.hash``) is the one resource
    layer's, ``fpvm.ignition.resources``; its errors become ``ResourceError`` here.
    """
    source = resource.source
    if source is None:
        return None
    remote = source != "" and source.partition(":")[0].lower() != "data"
    if remote and not opts.fetch_remote:
        return None
    from fpvm.ignition.resources import SourceError, fetch

    try:
        return fetch(resource, _fetch_options(opts) if remote else None, limit=opts.max_file_size)
    except SourceError as exc:
        raise ResourceError(exc.message) from None


# -- users ------------------------------------------------------------------------------------------
def _plan_passwd(b: _Builder, config: Config) -> None:
    pw = config.passwd
    batch = passwd.Batch()  # the account files are written once, after the last account action
    for i, group in enumerate(pw.groups):
        where = f"$.passwd.groups[{i}]"
        why = passwd.check_name(group.name)
        if why:
            b.fail(f"{where}.name", f"group name {group.name!r} would be refused by pw: {why}")
            continue
        if group.gid is not None and not 0 <= group.gid < 2**32 - 1:
            b.fail(f"{where}.gid", f"gid {group.gid} is not a valid FreeBSD gid")
            continue
        if group.should_exist is False:
            b.actions.append(Note(f"group {group.name}", "shouldExist false: groups are not removed", where))
            continue
        b.actions.append(passwd.GroupAction(group.name, group.gid, source=where, batch=batch))
    sudo_users: list[str] = []
    key_actions: list[Action] = []
    for i, user in enumerate(pw.users):
        where = f"$.passwd.users[{i}]"
        why = passwd.check_name(user.name)
        if why:
            b.fail(f"{where}.name", f"user name {user.name!r} would be refused by pw: {why}")
            continue
        for value, what in (user.gecos, "gecos"), (user.shell, "shell"), (user.password_hash, "passwordHash"):
            problem = passwd.check_field(value, what) if value is not None else None
            if problem:
                b.fail(f"{where}.{what}", problem)
        if user.uid is not None and not 0 <= user.uid < 2**32 - 1:
            b.fail(f"{where}.uid", f"uid {user.uid} is not a valid FreeBSD uid")
        home = user.home_dir or None
        if home is not None:
            try:
                home = passwd.clean_home(home)
            except ValueError as exc:
                b.fail(f"{where}.homeDir", str(exc))
        if user.primary_group is not None and passwd.check_name(user.primary_group):
            b.fail(f"{where}.primaryGroup", f"invalid group name {user.primary_group!r}")
        for j, key in enumerate(user.ssh_authorized_keys):
            problem = check_key(key)
            if problem:
                b.fail(f"{where}.sshAuthorizedKeys[{j}]", problem)
        if user.should_exist is False:
            b.actions.append(passwd.UserAction(user.name, should_exist=False, source=where, batch=batch))
            continue
        groups, mapped = passwd.map_groups(user.groups)
        note = f"Linux groups {', '.join(mapped)} -> {', '.join(groups)}" if mapped else ""
        primary = passwd.GROUP_MAP.get(user.primary_group, user.primary_group) if user.primary_group else None
        if user.no_user_group and primary is None:
            note = (note + "; " if note else "") + "noUserGroup ignored (pw needs a primary group)"
        is_root = user.name == "root"
        b.actions.append(
            passwd.UserAction(
                user.name,
                uid=None if is_root else user.uid,
                gecos=user.gecos,
                home=home,
                shell=user.shell,
                primary_group=primary,
                groups=groups,
                password_hash=user.password_hash or None,
                create_home=not user.no_create_home,
                source=where,
                disposition="translate" if note else "apply",
                note=note,
                batch=batch,
            )
        )
        if user.ssh_authorized_keys:
            key_actions.append(
                AuthorizedKeys(user.name, user.ssh_authorized_keys, home, f"{where}.sshAuthorizedKeys")
            )
        if not is_root:
            # Every account in the config is one podman logs in as (`core`, or `--username`'s user,
            # with or without podman's sudo groups depending on the version), and podman runs sudo.
            if passwd.sudoers_safe(user.name):
                sudo_users.append(user.name)
            else:
                b.actions.append(
                    Note(
                        f"sudo for {user.name}", "name needs quoting in sudoers; no sudo rule written", where
                    )
                )
    b.actions.extend(key_actions)
    if sudo_users:
        b.actions.append(SudoersFile(sudo_users, source="$.passwd.users"))


# -- storage ----------------------------------------------------------------------------------------
def _check_path(b: _Builder, path: str, where: str) -> bool:
    """A clean absolute path below the root; ``/`` itself is refused here and the rest still applies."""
    try:
        parts = split_guest_path(path)
    except UnsafePathError as exc:
        b.fail(where, str(exc))
        return False
    if not parts:
        b.actions.append(storage.RootRefused(path, where))
        return False
    return True


def _plan_storage(b: _Builder, config: Config) -> None:
    entries: list[tuple[int, Action]] = []  # (depth, action): a stable sort by depth; hard links last
    hard: list[Action] = []
    st = config.storage

    def add(path: str, action: Action) -> None:
        entries.append((len([p for p in path.split("/") if p]), action))

    for i, d in enumerate(st.directories):
        where = f"$.storage.directories[{i}]"
        if not _check_path(b, d.path, f"{where}.path"):
            continue
        place = storage.classify(d.path)
        if not place.paths:
            b.actions.append(Note(f"directory {d.path}", place.note, where))
            continue
        for path in place.paths:
            add(path, storage.DirectoryAction(path, d, where, place, d.mode))
    for i, f in enumerate(st.files):
        where = f"$.storage.files[{i}]"
        if not _check_path(b, f.path, f"{where}.path"):
            continue
        try:
            at = f"{where}.contents"
            data = resource_bytes(f.contents, b.opts)
            appends = []
            for j, a in enumerate(f.append):
                at = f"{where}.append[{j}]"
                appends.append(resource_bytes(a, b.opts) or b"")
        except ResourceError as exc:
            b.actions.append(UnreadableFile(f.path, f"{at}: {exc}", where))
            continue
        if f.path == storage.HOSTNAME:
            _plan_hostname(b, data, where)
            continue
        place = storage.classify(f.path)
        if not place.paths:
            b.actions.append(Note(f"file {f.path}", place.note, where))
            continue
        for path in place.paths:
            add(path, storage.FileAction(path, f, where, place, data, appends))
    for i, link in enumerate(st.links):
        where = f"$.storage.links[{i}]"
        if not _check_path(b, link.path, f"{where}.path"):
            continue
        target = link.target or ""
        if not target:
            b.fail(f"{where}.target", "a link needs a target")
            continue
        place = storage.classify(link.path)
        if not place.paths:
            b.actions.append(Note(f"link {link.path}", place.note, where))
            continue
        mapped = storage.LINK_TARGETS.get(target, target)
        if link.path == storage.LOCALTIME:
            place = storage.Placement(
                "translate", place.paths, "time zone: replaces the image's /etc/localtime"
            )
        elif mapped != target:
            place = storage.Placement("translate", place.paths, f"{target} is {mapped} on FreeBSD")
        if link.hard and not _check_path(b, target, f"{where}.target"):
            continue
        for path in place.paths:
            action = storage.LinkAction(path, link, where, place, mapped)
            if link.hard:
                hard.append(action)
            else:
                add(path, action)
            if link.path == storage.LOCALTIME:
                zone = _zoneinfo_file(target, where)
                if zone is not None:
                    add(storage.ZONEINFO_NAME, zone)
    entries.sort(key=lambda e: e[0])
    b.actions.extend(a for _, a in entries)
    b.actions.extend(hard)
    # tmpfiles.d lines (podman's docker.sock link) are applied after the files, at every boot
    tmpfiles = next(
        (f"$.storage.files[{i}]" for i, f in enumerate(st.files) if f.path.startswith(TMPFILES_D + "/")), None
    )
    if tmpfiles is not None:
        b.actions.append(storage.TmpfilesCreate(tmpfiles))


def _zoneinfo_file(target: str, where: str) -> storage.FileAction | None:
    """Where tzsetup(8) remembers the zone of a config's /etc/localtime link (None: no zone named)."""
    from fpvm.ignition.model import File

    marker = "usr/share/zoneinfo/"
    at = target.find(marker)
    zone = target[at + len(marker) :] if at >= 0 else ""
    if not zone:
        return None
    node = File(path=storage.ZONEINFO_NAME, overwrite=True, mode=0o644)
    place = storage.Placement("translate", (node.path,), "tzsetup(8) remembers the zone here")
    return storage.FileAction(node.path, node, where, place, zone.encode() + b"\n", [])


def _plan_hostname(b: _Builder, data: bytes | None, where: str) -> None:
    from fpvm.guest.rcconf import RcConfSet

    host = (data or b"").decode("utf-8", "replace").strip().split("\n")[0].strip()  # the first line
    ok = host and len(host) <= 253 and all((c.isascii() and c.isalnum()) or c in "-." for c in host)
    if not ok:
        b.fail(f"{where}.contents", f"/etc/hostname does not hold a valid host name: {host!r}")
        return
    b.actions.append(RcConfSet("hostname", {"hostname": host}, source=where, note="/etc/hostname on Linux"))


# -- units and mounts (other modules) ------------------------------------------------------------------
def _plan_units(b: _Builder, config: Config) -> None:
    from fpvm.guest.systemd import plan_units

    try:
        b.actions.extend(plan_units(config, environment=b.opts.environment))
    except ValueError as exc:
        b.fail("$.systemd.units", str(exc))


def _plan_mounts(b: _Builder, config: Config) -> None:
    from fpvm.guest.mounts import MountError, plan_mounts

    # Without a root (``fpvm ignition show``) only the config is read: an absent root has no table.
    root = b.opts.root or RootFS("/nonexistent/fpvm-no-root")
    try:
        # The systemd table already notes each skipped mount unit (same verdict, unit_request).
        b.actions.extend(plan_mounts(config, root, notes_for_units=False))
    except (MountError, ValueError) as exc:
        b.fail("$.systemd.units", str(exc))


def _plan_api_socket(b: _Builder, config: Config) -> None:
    """podman's socket paths (/run/podman, /run/user/<uid>/podman) when the config enables the API."""
    api = ("podman.socket", "podman.service")
    enabling = [i for i, u in enumerate(config.systemd.units) if u.name in api and u.enabled and not u.mask]
    if not enabling:
        return
    where = f"$.systemd.units[{enabling[0]}]"
    from fpvm.guest.apisocket import plan_api_socket, podman_users

    for action in plan_api_socket(podman_users(config)):
        if not action.source.startswith("$.passwd"):
            action.source = where
        b.actions.append(action)


_NO_DEVICES = "not supported by the fpvm guest: the VM has one disk, which grows at every boot"
_KARGS_SHOWN = 8  # kernel arguments named in the one note per list
_NO_KARGS = "Linux kernel command line: FreeBSD takes its tunables from loader.conf (the image sets them)"


def _plan_unsupported(b: _Builder, config: Config) -> None:
    """Sections podman never sends and FreeBSD cannot act on: reported, never fatal."""
    st = config.storage
    for i, d in enumerate(st.disks):
        b.actions.append(Note(f"disk {d.device}", _NO_DEVICES, f"$.storage.disks[{i}]"))
    for i, r in enumerate(st.raid):
        b.actions.append(Note(f"raid {r.name}", _NO_DEVICES, f"$.storage.raid[{i}]"))
    for i, fs in enumerate(st.filesystems):
        at = f" at {fs.path}" if fs.path else ""
        b.actions.append(Note(f"filesystem {fs.device}{at}", _NO_DEVICES, f"$.storage.filesystems[{i}]"))
    for i, lk in enumerate(st.luks):
        b.actions.append(Note(f"luks {lk.name}", _NO_DEVICES, f"$.storage.luks[{i}]"))
    kargs = config.kernel_arguments
    for key, values in (("shouldExist", kargs.should_exist), ("shouldNotExist", kargs.should_not_exist)):
        # One note per list, however long: a million ignored arguments must not cost a million actions
        # (and report entries); the note names the first few.
        if values:
            shown = " ".join(values[:_KARGS_SHOWN]) + (" ..." if len(values) > _KARGS_SHOWN else "")
            subject = f"{len(values)} kernel argument(s) {key}: {shown}"
            b.actions.append(Note(subject, _NO_KARGS, f"$.kernelArguments.{key}"))


def build_plan(config: Config, options: PlanOptions | None = None, *, units: bool = True) -> list[Action]:
    """The actions that make a FreeBSD root match ``config``; raises PlanError for bad input."""
    b = _Builder(options or PlanOptions())
    b.opts.config = config
    _plan_passwd(b, config)
    _plan_storage(b, config)
    _plan_unsupported(b, config)
    if units:
        _plan_units(b, config)
        _plan_api_socket(b, config)
        _plan_mounts(b, config)
    if b.problems:
        raise PlanError(b.problems)
    return b.actions
