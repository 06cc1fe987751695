"""Host folders in the guest: every way podman or fpvm asks for one ends as ``mount -t p9fs TAG DIR``.

Three callers share this translation so that they cannot drift apart:

* the ``mount`` linux-compat shim (podman 4.x/5.0-5.1 ``mount -t 9p -o trans=virtio ...`` and 5.2+
  ``mount -t virtiofs ...`` over ssh, see ``fpvm.guest.compat.mount``);
* ``*.mount`` units in the Ignition config (podman's macOS providers describe volumes that way);
* fpvm's own mount table ``/usr/local/etc/fpvm/mounts.json`` written by ``fpvm machine``.

The last two are planned at every boot (``plan_mounts``): mounts made over ssh vanish when the guest
reboots by itself (podman issue 15976), the table and the units do not.

FreeBSD facts used here (FreeBSD 15 man pages): p9fs(4) ``mount -t p9fs <share name> <dir>``; the
driver module is ``virtio_p9fs`` (it pulls in ``p9fs``), loaded with kldload(8) ``-n`` ("do not try to
load module if already loaded"); each virtio 9p device publishes its tag as the sysctl
``dev.virtio_p9fs.<unit>.p9fs_mount_tag`` (sysctl(8) ``-e`` prints ``name=value``). FreeBSD has no
virtio-fs driver, so a virtiofs request can only be honoured when the same tag (or its first 31 bytes,
QEMU's limit for 9p tags) is also offered as a 9p device (``fpvm machine`` and the podman 5.2+ helpers
of ``fpvm podman-machine setup`` do that).

Bad input is refused before any command runs, so a rejected request never leaves a mount behind.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from fpvm.contract import MAX_9P_TAG, decode_mounts
from fpvm.contract import MOUNTS_PATH as MOUNTS_TABLE
from fpvm.contract import MountError as MountError  # re-exported with the rules: the shim imports them here
from fpvm.contract import check_tag as check_tag
from fpvm.contract import check_target as check_target
from fpvm.guest.actions import Action, Note
from fpvm.guest.runner import CommandError, Result, Runner

# Not typing.TYPE_CHECKING: the mount shim would import typing (~5 ms) for nothing (mypy treats the
# name the same way).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from fpvm.guest.context import ApplyContext
    from fpvm.guest.rootfs import RootFS
    from fpvm.ignition.model import Config, File, Unit

KLDLOAD = "/sbin/kldload"
MOUNT = "/sbin/mount"
SYSCTL = "/sbin/sysctl"
P9_MODULE = "virtio_p9fs"
P9_SYSCTL = "dev.virtio_p9fs"

# Absolute paths on purpose: the linux-compat directory (with its own ``mount``) is first on PATH.
KLDLOAD_ARGV = [KLDLOAD, "-n", P9_MODULE]
SYSCTL_TAGS_ARGV = [SYSCTL, "-e", P9_SYSCTL]
MOUNT_LIST_ARGV = [MOUNT, "-p"]

NO_VIRTIOFS = (
    "FreeBSD has no virtio-fs driver; use `fpvm machine` (it shares folders over 9p) "
    "or podman <= 5.1 with the qemu provider"
)

_SYSCTL_TAG_RE = re.compile(r"dev\.virtio_p9fs\.(\d+)\.p9fs_mount_tag[=:] ?(.*)\Z")


class MountRequest:
    """One host folder to mount: ``tag`` as offered by the host, at ``target`` in the guest.

    ``fstype`` is what the host asked for: ``9p`` (mount directly) or ``virtiofs`` (only possible when
    a 9p device with the same tag exists). ``origin`` names where the request came from, for messages.

    A plain class rather than a dataclass: the ``mount`` shim runs for every volume podman mounts, and
    importing ``dataclasses`` (with ``inspect``) took ~13 ms of its start-up.
    """

    __slots__ = ("fstype", "origin", "readonly", "tag", "target")

    def __init__(
        self, tag: str, target: str, readonly: bool = False, fstype: str = "9p", origin: str = ""
    ) -> None:
        self.tag = tag
        self.target = target
        self.readonly = readonly
        self.fstype = fstype
        self.origin = origin

    def argv(self) -> list[str]:
        """mount(8) for p9fs(4): ``mount -t p9fs [-o ro] TAG DIR``."""
        opts = ["-o", "ro"] if self.readonly else []
        return [MOUNT, "-t", "p9fs", *opts, self.tag, self.target]


def parse_p9_tags(output: bytes | str) -> dict[str, int]:
    """``sysctl -e dev.virtio_p9fs`` output -> {tag: unit}."""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    tags: dict[str, int] = {}
    for line in text.split("\n"):
        m = _SYSCTL_TAG_RE.match(line.strip())
        if m and m.group(2):
            tags.setdefault(m.group(2), int(m.group(1)))
    return tags


def p9_tags(runner: Runner) -> dict[str, int]:
    """The 9p devices the host offers, {tag: unit}; empty when there are none (or none can be seen)."""
    result = runner.run(SYSCTL_TAGS_ARGV, check=False)
    return parse_p9_tags(result.stdout) if result.ok else {}


def parse_mounted(output: bytes | str) -> set[tuple[str, str]]:
    """``mount -p`` output (fstab format) -> {(tag, mount point)} of the p9fs mounts."""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    found: set[tuple[str, str]] = set()
    for line in text.split("\n"):
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "p9fs":
            found.add((fields[0], fields[1]))
    return found


def explain_failure(req: MountRequest, result: Result, runner: Runner) -> str:
    """A precise message for a failed p9fs mount (FreeBSD's own is often just "Invalid argument")."""
    stderr = result.stderr.decode("utf-8", "replace").strip()
    if "read-only" in stderr.lower() and not req.readonly:
        return f"the host shares {req.tag!r} read-only; mount it with -o ro ({stderr})"
    tags = p9_tags(runner)
    if tags and req.tag not in tags:
        offered = ", ".join(sorted(tags))
        return f"no 9p device with tag {req.tag!r} (the host offers: {offered})"
    if not tags and not runner.recording:
        return f"no 9p device with tag {req.tag!r}: the host offers no 9p shares ({stderr})"
    if "busy" in stderr.lower():
        return f"9p tag {req.tag!r} is already mounted elsewhere (one mount per tag)"
    return f"mount -t p9fs {req.tag} {req.target} failed: {stderr or f'exit {result.returncode}'}"


def resolve_virtiofs(req: MountRequest, runner: Runner) -> MountRequest:
    """Turn a virtiofs request into a 9p one when the host offers that tag as a 9p device."""
    if req.fstype != "virtiofs":
        return req
    tags = p9_tags(runner)
    tag = req.tag
    if tag not in tags and len(tag) > MAX_9P_TAG and tag[:MAX_9P_TAG] in tags:
        tag = tag[:MAX_9P_TAG]  # QEMU's 9p tags are at most 31 bytes; podman's virtiofs tags have 36
    if tag not in tags:
        raise MountError(
            f"cannot mount virtiofs tag {req.tag!r} at {req.target}: no 9p device offers that tag "
            f"and {NO_VIRTIOFS}"
        )
    return MountRequest(tag, req.target, req.readonly, "9p", req.origin)


def mount_now(req: MountRequest, runner: Runner) -> None:
    """kldload + mount for one request (the shim's path); raises MountError with a precise cause."""
    load = runner.run(KLDLOAD_ARGV, check=False)
    if not load.ok:
        err = load.stderr.decode("utf-8", "replace").strip()
        raise MountError(f"cannot load {P9_MODULE}: {err or f'exit {load.returncode}'}")
    req = resolve_virtiofs(req, runner)
    result = runner.run(req.argv(), check=False)
    if not result.ok:
        raise MountError(explain_failure(req, result, runner))


# -- boot-time plan -----------------------------------------------------------------------------


class MountAction(Action):
    """Mount one host folder at boot (table entry or ``*.mount`` unit); re-done on every boot.

    A failure is logged, not raised: a missing share must not stop the rest of the boot (podman
    waits for Ready). The mount point is created just before mounting, like podman's ``mkdir -p``.
    """

    kind = "mount"

    def __init__(self, req: MountRequest, source: str = "") -> None:
        super().__init__(source or req.origin, "translate", f"{req.fstype} -> p9fs")
        self.req = req

    def describe(self) -> str:
        ro = " (read-only)" if self.req.readonly else ""
        return f"mount {self.req.fstype} tag {self.req.tag} at {self.req.target}{ro} with p9fs"

    def fields(self) -> dict[str, Any]:
        return {
            "tag": self.req.tag,
            "target": self.req.target,
            "readonly": self.req.readonly,
            "fstype": self.req.fstype,
            "argv": self.req.argv(),
        }

    def apply(self, ctx: ApplyContext) -> bool:
        req = self.req
        if not ctx.recording:
            listed = ctx.runner.run(MOUNT_LIST_ARGV, check=False)
            if (req.tag, req.target) in parse_mounted(listed.stdout):
                return False
        try:
            req = resolve_virtiofs(req, ctx.runner)
        except MountError as exc:
            ctx.log.warn(f"{self.source or 'mount'}: {exc}")
            return False
        ctx.root.makedirs(req.target)
        try:
            ctx.run(req.argv())
        except CommandError as exc:
            ctx.log.error(f"{self.source or 'mount'}: {explain_failure(req, exc.result, ctx.runner)}")
            return False
        ctx.log.info(f"mounted {req.tag} at {req.target}")
        return True


class LoadP9Action(Action):
    """``kldload -n virtio_p9fs`` before the boot mounts; a failure is logged (no share, no boot stop)."""

    kind = "command"

    def __init__(self) -> None:
        super().__init__("", "translate")
        self.argv = list(KLDLOAD_ARGV)

    def describe(self) -> str:
        return f"run {' '.join(self.argv)}  (9p driver for host folders)"

    def fields(self) -> dict[str, Any]:
        return {"argv": self.argv}

    def apply(self, ctx: ApplyContext) -> bool:
        try:
            ctx.run(self.argv)
        except CommandError as exc:
            ctx.log.error(f"cannot load {P9_MODULE}: {exc}")
            return False
        return True


def split_options(text: str) -> list[str]:
    """Comma-separated mount options; commas inside double quotes (SELinux contexts) do not split."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == "," and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if quoted:
        raise MountError(f"unbalanced double quote in mount options {text!r}")
    out.append("".join(cur))
    return [o for o in (s.strip() for s in out) if o]


def request_from_unit(name: str, contents: str, origin: str) -> MountRequest:
    """``[Mount] What= Where= Type= Options=`` of a podman mount unit -> a request (or MountError).

    The unit is read by the lexer Ignition's validation uses (``fpvm.ignition.unitfile``); the last
    assignment of a key wins, as in systemd.
    """
    from fpvm.ignition.unitfile import UnitSyntaxError, parse_unit

    try:
        options = parse_unit(contents)
    except UnitSyntaxError as exc:
        raise MountError(f"{origin}: unit {name}: {exc}") from None
    if not any(o.section == "Mount" for o in options):
        raise MountError(f"{origin}: unit {name} has no [Mount] section")
    mount = {o.name: o.value for o in options if o.section == "Mount"}
    fstype = mount.get("Type", "")
    if fstype not in ("virtiofs", "9p"):
        raise MountError(f"{origin}: unit {name}: mount type {fstype or '(none)'!r} is not supported")
    readonly = False
    for opt in split_options(mount.get("Options", "")):
        key = opt.split("=", 1)[0]
        if opt == "ro":
            readonly = True
        elif opt == "rw" or key in ("context", "defcontext", "trans", "version", "msize", "cache"):
            continue
        else:
            raise MountError(f"{origin}: unit {name}: unknown mount option {opt!r}")
    tag = check_tag(mount.get("What", ""), f"{origin}: unit {name}: What=")
    try:
        target = check_target(mount.get("Where", ""))
    except MountError as exc:
        raise MountError(f"{origin}: unit {name}: Where=: {exc}") from None
    return MountRequest(tag, target, readonly, fstype, origin)


def requests_from_table(data: bytes, origin: str = MOUNTS_TABLE) -> list[MountRequest]:
    """fpvm's mount table (schema and checks: ``fpvm.contract.decode_mounts``) -> requests (or MountError)."""
    return [
        MountRequest(tag, target, ro, "9p", f"$.mounts[{i}]")
        for i, (tag, target, ro) in enumerate(decode_mounts(data, origin))
    ]


def check_unique(reqs: Sequence[MountRequest]) -> None:
    """One mount per tag (a 9p channel serves one mount) and per mount point."""
    tags: dict[str, str] = {}
    targets: dict[str, str] = {}
    for req in reqs:
        if req.tag in tags:
            raise MountError(f"{req.origin}: tag {req.tag!r} is already mounted by {tags[req.tag]}")
        if req.target in targets:
            other = targets[req.target]
            raise MountError(f"{req.origin}: {req.target} is already the mount point of {other}")
        tags[req.tag] = req.origin
        targets[req.target] = req.origin


def _file_bytes(file: File, origin: str) -> bytes | None:
    """Inline contents of an Ignition file entry, read by the one resource layer.

    ``fpvm.ignition.resources`` decodes the ``data:`` URL, decompresses gzip (every member, at most
    64 MiB) and checks ``verification.hash``, exactly as for any other file's contents; it is imported
    here only when a config carries the table, never on the mount shim's path.
    """
    contents = file.contents
    source = contents.source
    if not source:
        return None
    if source[:5].lower() != "data:":
        raise MountError(f"{origin}.contents.source: the mount table must be inline (a data: URL)")
    from fpvm.ignition.resources import SourceError, fetch_url

    try:
        return fetch_url(source, compression=contents.compression, verification=contents.verification.hash)
    except SourceError as exc:
        raise MountError(f"{origin}.contents: {exc.message}") from None


def unit_request(unit: Unit, where: str) -> tuple[MountRequest | None, str]:
    """(request, "") for a ``*.mount`` unit the mount step honours, else (None, why it is skipped).

    The one verdict on a podman mount unit: ``plan_mounts`` and the systemd table
    (``fpvm.guest.systemd.classify_unit``) both use it, so ``fpvm ignition show`` / ``fpvm guest plan``
    never call a unit "mounted at every boot" that the mount step skips.
    """
    if unit.mask or unit.enabled is False:
        return None, "masked or disabled mount unit"
    if not unit.contents:
        return None, "mount unit without contents"
    try:
        return request_from_unit(unit.name, unit.contents, where), ""
    except MountError as exc:
        # A unit comes from podman (one per volume), not from fpvm: one that FreeBSD cannot honour
        # (e.g. a macOS folder with a space, podman 5.5+) is reported, and must not stop the users,
        # keys and API socket the rest of the config asks for.
        return None, f"not mounted: {exc}"


def plan_mounts(config: Config | None, root: RootFS, *, notes_for_units: bool = True) -> list[Action]:
    """Every boot's mounts: fpvm's table (from the config, else from the root) and ``*.mount`` units.

    ``config`` is None on a boot that got no config: the table is then read from the root.

    Raises MountError for a bad mount table or clashing requests, before anything is mounted; a podman
    mount unit that cannot be honoured becomes a note instead (unless ``notes_for_units`` is False:
    ``build_plan`` gets that note from the systemd table, which asks ``unit_request`` too).
    """
    reqs: list[MountRequest] = []
    notes: list[Action] = []
    table: bytes | None = None
    origin = MOUNTS_TABLE
    for i, file in enumerate(config.storage.files if config else ()):
        if file.path == MOUNTS_TABLE:
            origin = f"$.storage.files[{i}]"
            table = _file_bytes(file, origin)
    if table is None:
        table = root.read_bytes(MOUNTS_TABLE)
    if table is not None:
        reqs.extend(requests_from_table(table, origin))
    for i, unit in enumerate(config.systemd.units if config else ()):
        if not unit.name.endswith(".mount"):
            continue
        where = f"$.systemd.units[{i}]"
        req, why = unit_request(unit, where)
        if req is not None:
            reqs.append(req)
        elif notes_for_units:
            notes.append(Note(unit.name, why, where))
    check_unique(reqs)
    if not reqs:
        return notes
    return [*notes, LoadP9Action(), *(MountAction(r) for r in reqs)]

