"""``mount``: podman's Linux host-folder mounts become p9fs mounts; everything else is /sbin/mount.

Accepted (podman 4.x, 5.0-5.1, 5.2+):

* ``mount -t 9p -o trans=virtio TAG DIR [-o version=...,msize=...,cache=...] [-o ro]`` ->
  ``kldload -n virtio_p9fs`` then ``mount -t p9fs [-o ro] TAG DIR``;
* ``mount -t virtiofs TAG DIR [-o context=...[,ro]]`` -> the same p9fs mount when a 9p device with
  that tag exists (sysctl ``dev.virtio_p9fs.<n>.p9fs_mount_tag``), else an error naming the cause.

The whole command line is checked before anything runs: an unknown option, a missing tag, a mount
point with spaces or quotes or one that does not exist is refused without loading or mounting.
"""

from __future__ import annotations

from fpvm.guest.compat.base import Shim
from fpvm.guest.mounts import (
    MOUNT,
    MountError,
    MountRequest,
    check_tag,
    check_target,
    mount_now,
    split_options,
)
from fpvm.guest.rootfs import UnsafePathError

HANDLED = ("9p", "virtiofs")
IGNORED_9P = ("version", "msize", "cache")  # Linux 9p tuning: accepted (with a value), no meaning for p9fs
SELINUX = ("context", "defcontext", "fscontext", "rootcontext")


def find_type(args: list[str]) -> str | None:
    """The value of the first ``-t``/``--types`` option, or None."""
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-t", "--types") and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--types="):
            return a.split("=", 1)[1]
        if a.startswith("-t") and len(a) > 2 and not a.startswith("--"):
            return a[2:]
        i += 1
    return None


def parse(args: list[str]) -> tuple[str, list[str], list[str]]:
    """(type, options, operands) of a ``-t 9p|virtiofs`` command line; MountError for anything else."""
    fstype = ""
    options: list[str] = []
    operands: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        value: str | None = None
        if a in ("-t", "--types", "-o", "--options"):
            if i + 1 >= len(args):
                raise MountError(f"option {a} needs a value")
            value = args[i + 1]
            i += 2
        elif a.startswith(("--types=", "--options=")):
            a, value = a.split("=", 1)
            i += 1
        elif a.startswith(("-t", "-o")) and len(a) > 2:
            a, value = a[:2], a[2:]
            i += 1
        elif a in ("-r", "-w"):
            a, value = "-o", ("ro" if a == "-r" else "rw")
            i += 1
        elif a == "--":
            operands.extend(args[i + 1 :])
            break
        elif a.startswith("-") and a != "-":
            raise MountError(f"unsupported option {a!r} for a host-folder mount")
        else:
            operands.append(a)
            i += 1
            continue
        if a in ("-t", "--types"):
            fstype = value
        else:
            options.extend(split_options(value))
    return fstype, options, operands


def request(args: list[str]) -> MountRequest:
    """Check a 9p/virtiofs command line completely; the p9fs request it stands for."""
    fstype, options, operands = parse(args)
    readonly = False
    trans = None
    for opt in options:
        key, eq, value = opt.partition("=")
        if opt in ("ro", "rw"):
            readonly = opt == "ro"
        elif fstype == "9p" and key == "trans" and eq:
            trans = value
        elif fstype == "9p" and key in IGNORED_9P and eq and value:
            continue
        elif fstype == "virtiofs" and key in SELINUX and eq:
            continue  # SELinux labels: FreeBSD has none
        else:
            raise MountError(f"unknown option {opt!r} for -t {fstype}")
    if fstype == "9p" and trans != "virtio":
        raise MountError(
            f"-t 9p needs -o trans=virtio (got {'trans=' + trans if trans else 'no trans='}); "
            "only virtio 9p devices exist in the guest"
        )
    if len(operands) != 2:
        what = "a tag and a mount point" if len(operands) < 2 else "only a tag and a mount point"
        raise MountError(f"-t {fstype} needs {what}, got {len(operands)} operand(s): {' '.join(operands)}")
    tag = check_tag(operands[0])
    target = check_target(operands[1])
    return MountRequest(tag, target, readonly, fstype, f"mount -t {fstype}")


def run(shim: Shim, args: list[str]) -> int:
    fstype = find_type(args)
    if fstype not in HANDLED:
        return shim.passthrough([MOUNT, *args])
    try:
        req = request(args)
        try:
            if not shim.root.is_dir(req.target):
                raise MountError(f"mount point {req.target} does not exist (create it first: mkdir -p)")
        except UnsafePathError as exc:
            raise MountError(str(exc)) from None
        except OSError as exc:  # a name too long for the system, a parent that cannot be searched
            raise MountError(f"mount point {req.target}: {exc.strerror or exc}") from None
        mount_now(req, shim.runner)
    except MountError as exc:
        return shim.error(str(exc))
    shim.info(f"mounted {req.tag} at {req.target} (asked: -t {fstype})")
    return 0
