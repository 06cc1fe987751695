"""What the host side and the guest agent agree on, written down once.

The host (``fpvm machine``, or podman's qemu provider) and the guest agent never import each other:
``fpvm.machine`` and ``fpvm.guest`` both import this module instead, so a name, a path or a rule that
one side writes and the other reads cannot drift apart. What is here:

* the fw_cfg entries podman 4.x's qemu provider hands to the VM (the Ignition config, the proxy
  environment);
* the virtio-serial port the guest writes ``Ready`` to, by name (host, QEMU argv) and by the path
  FreeBSD's virtio_console gives it (guest);
* the podman API socket: where the guest's podman serves it and where podman's connections look;
* fpvm's 9p volumes: the tag scheme (``fpvmN``), the mount table the host writes into the Ignition
  config (path, schema, encoder and validator) and the rule for a mount point.

Standard library only (it runs in the guest) and cheap to import: the ``mount`` shim imports it for
every volume podman mounts, so no ``typing``, ``dataclasses`` or ``pathlib`` at run time.
"""

from __future__ import annotations

import json
import re

# Not typing.TYPE_CHECKING: importing typing costs the mount shim ~5 ms (mypy treats the name the same).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

# -- fw_cfg -----------------------------------------------------------------------------------------
# ``-fw_cfg name=<entry>,file=...``: the Ignition config, and (podman 4.x) base64 of the host's proxy
# variables, ``K="v"|K2="v2"|`` (fpvm.guest.proxy decodes it).
FWCFG_CONFIG = "opt/com.coreos/config"
FWCFG_ENVIRONMENT = "opt/com.coreos/environment"

# -- readiness ----------------------------------------------------------------------------------------
# The host listens on a virtserialport of this name; the guest writes "Ready\n" to it. FreeBSD's
# virtio_console(4) names the port /dev/vtcon/<name>.
READY_PORT = "org.fedoraproject.port.0"
READY_DEVICE = f"/dev/vtcon/{READY_PORT}"

# -- podman API socket -------------------------------------------------------------------------------
# FreeBSD's podman serves its API here (registry_freebsd.go); fpvm's connection URI names it.
API_SOCKET = "/var/run/podman/podman.sock"
# podman's own connections look under /run (Linux paths); the image makes /run a link to /var/run.
RUN_API_SOCKET = "/run/podman/podman.sock"
USER_RUN_DIR = "/var/run/user"


def user_api_socket(uid: int) -> str:
    """Where podman's rootless connection finds the API of user ``uid``, in FreeBSD's terms."""
    return f"{USER_RUN_DIR}/{uid}/podman/podman.sock"


def run_user_api_socket(uid: int | str) -> str:
    """The same socket as podman names it (``/run/user/<uid>/...``; /run is a link to /var/run)."""
    return f"/run/user/{uid}/podman/podman.sock"


# -- 9p volumes and fpvm's mount table ----------------------------------------------------------------
VOLUME_TAG_PREFIX = "fpvm"
# QEMU refuses longer 9p mount tags; `fpvm podman-machine setup`'s helpers offer podman 5.2+'s 36-digit
# virtiofs tag cut to this length (machine/podman_helper_main.py, which may not import fpvm, repeats it),
# and the guest matches a virtiofs request with a 9p device carrying its first MAX_9P_TAG bytes.
MAX_9P_TAG = 31
# Written by ``fpvm machine`` as an Ignition file, read by the guest's mount step at every boot:
# {"mounts": [{"tag": "fpvm0", "target": "/Users/me/src", "readonly": false}]}
MOUNTS_PATH = "/usr/local/etc/fpvm/mounts.json"
MOUNT_KEYS = ("tag", "target", "readonly")

_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}\Z")
# Characters that a mount point may not hold: whitespace and quotes (mount -p and fstab(5) cannot
# represent them plainly, and a quote in a target is a sign of a quoting bug on the host side),
# backslashes and control characters.
_BAD_TARGET_CHARS = re.compile(r"[\s\"'`\\\x00-\x1f\x7f]")


class MountError(ValueError):
    """A mount request that cannot be honoured; the message names the cause."""


def volume_tag(index: int) -> str:
    """The 9p tag of ``fpvm machine``'s ``index``-th volume (QEMU's ``mount_tag``, the table's ``tag``)."""
    return f"{VOLUME_TAG_PREFIX}{index}"


def check_tag(tag: str, what: str = "tag") -> str:
    """A 9p/virtiofs tag: letters, digits, ``.``, ``_``, ``-`` (podman's are ``vol0`` or 36 hex)."""
    if not tag:
        raise MountError(f"missing {what}")
    if not _TAG_RE.match(tag):
        raise MountError(f"{what} {tag!r}: only letters, digits, '.', '_' and '-' are allowed")
    return tag


def check_target(target: str) -> str:
    """A mount point: a clean absolute path without spaces, quotes or control characters.

    The guest refuses a whole mount table for one target it cannot mount, so the host checks its
    volumes with this same rule before it writes one.
    """
    if not target:
        raise MountError("missing mount point")
    bad = _BAD_TARGET_CHARS.search(target)
    if bad:
        char = bad.group(0)
        name = {" ": "a space", '"': "a double quote", "'": "a single quote"}.get(char, repr(char))
        raise MountError(f"mount point {target!r} contains {name}; such paths are not supported")
    if not target.startswith("/"):
        raise MountError(f"mount point {target!r} is not an absolute path")
    parts = [p for p in target.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise MountError(f"mount point {target!r} contains '.' or '..' components")
    if not parts:
        raise MountError("refusing to mount over /")
    return "/" + "/".join(parts)


def decode_mounts(data: bytes, origin: str = MOUNTS_PATH) -> list[tuple[str, str, bool]]:
    """The mount table's bytes -> ``(tag, target, readonly)`` per entry, each checked; else MountError.

    Messages name ``origin`` and the JSON path (``$.mounts[1].target``).
    """
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise MountError(f"{origin}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("mounts", []), list):
        raise MountError(f'{origin}: $.mounts must be a list of {{"tag", "target", "readonly"}} objects')
    out: list[tuple[str, str, bool]] = []
    for i, entry in enumerate(doc.get("mounts", [])):
        where = f"{origin}: $.mounts[{i}]"
        if not isinstance(entry, dict):
            raise MountError(f"{where}: must be an object")
        unknown = sorted(set(entry) - set(MOUNT_KEYS))
        if unknown:
            raise MountError(f"{where}: unknown key {unknown[0]!r}")
        tag, target, ro = entry.get("tag"), entry.get("target"), entry.get("readonly", False)
        if not isinstance(tag, str):
            raise MountError(f"{where}.tag: missing or not a string")
        if not isinstance(target, str):
            raise MountError(f"{where}.target: missing or not a string")
        if not isinstance(ro, bool):
            raise MountError(f"{where}.readonly: must be true or false")
        try:
            out.append((check_tag(tag), check_target(target), ro))
        except MountError as exc:
            raise MountError(f"{where}: {exc}") from None
    return out


def encode_mounts(entries: Iterable[tuple[str, str, bool]]) -> str:
    """``(tag, target, readonly)`` entries -> the mount table's text (what ``decode_mounts`` reads back).

    Each entry is checked with the guest's rules first (MountError), so the host never writes a
    table the guest would refuse.
    """
    mounts = []
    for i, (tag, target, readonly) in enumerate(entries):
        try:
            check_tag(tag)
            if check_target(target) != target:
                raise MountError(f"mount point {target!r} is not in its normal form")
        except MountError as exc:
            raise MountError(f"$.mounts[{i}]: {exc}") from None
        mounts.append({"tag": tag, "target": target, "readonly": bool(readonly)})
    return json.dumps({"mounts": mounts}, indent=2) + "\n"


__all__ = [
    "API_SOCKET",
    "FWCFG_CONFIG",
    "FWCFG_ENVIRONMENT",
    "MOUNTS_PATH",
    "MOUNT_KEYS",
    "READY_DEVICE",
    "READY_PORT",
    "RUN_API_SOCKET",
    "USER_RUN_DIR",
    "VOLUME_TAG_PREFIX",
    "MountError",
    "check_tag",
    "check_target",
    "decode_mounts",
    "encode_mounts",
    "run_user_api_socket",
    "user_api_socket",
    "volume_tag",
]
