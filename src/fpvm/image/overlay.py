"""The overlay: every file fpvm adds on top of FreeBSD's packages, as data.

``entries()`` lists the tree; ``write()`` puts it under a root (a staging directory during a build,
any directory for ``fpvm image overlay DIR`` so people can review it). The rc.d script and the
linux-compat launchers belong to the guest agent and come from ``fpvm.guest``; everything else is
rendered from the recipe's tables.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fpvm import arch as archmod
from fpvm.fsutil import atomic_write
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

STORAGE_CONF = f"""\
# fpvm: the root file system is UFS, so containers/storage uses its vfs driver.
[storage]
driver = "{rcp.STORAGE_DRIVER}"
runroot = "/var/run/containers/storage"
graphroot = "/var/db/containers/storage"
""".encode()

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


# The fpvm command in the guest; the package itself is unpacked into site-packages by the build.
FPVM_LAUNCHER = f"""\
#!{rcp.PYTHON}
import sys

from fpvm.cli import main

sys.exit(main())
""".encode()


def _guest_rc() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The guest agent's rc.d scripts (name -> text) and the rc.conf.d settings that enable them."""
    try:
        rcd = importlib.import_module("fpvm.guest.rcd")
        scripts = {name: rcd.script_text(name).decode() for name in rcd.SCRIPTS}
        conf = {
            svc: {k: v for k, v in values.items() if v is not None} for svc, values in rcd.RC_CONF.items()
        }
    except (ImportError, AttributeError, KeyError, OSError) as exc:
        raise OverlayError(f"the guest's rc.d scripts are not available (fpvm.guest.rcd: {exc})") from None
    if "fpvm" not in scripts:
        raise OverlayError("fpvm.guest.rcd has no rc.d script named fpvm")
    return scripts, conf


def _compat_launchers() -> dict[str, str]:
    """linux-compat launchers, owned by the guest agent (``fpvm.guest.compat.launchers``)."""
    try:
        compat = importlib.import_module("fpvm.guest.compat")
    except ImportError as exc:
        raise OverlayError(
            f"the linux-compat launchers are not available (fpvm.guest.compat: {exc})"
        ) from None
    launchers: Callable[[], dict[str, str]] | None = getattr(compat, "launchers", None)
    if launchers is None:
        raise OverlayError("fpvm.guest.compat exports no launchers()")
    return dict(launchers())


def entries(
    arch: str,
    release: rcp.Release | None = None,
    hostname: str = "fpvm",
    guest_rc: Callable[[], tuple[dict[str, str], dict[str, dict[str, str]]]] | None = None,
    compat: Callable[[], dict[str, str]] | None = None,
) -> list[Entry]:
    """The whole overlay for ``arch``; ``guest_rc`` and ``compat`` default to the guest agent's own."""
    scripts, guest_conf = (guest_rc or _guest_rc)()
    compat = compat or _compat_launchers
    arch = archmod.normalize(arch)
    release = release or rcp.parse_release(rcp.DEFAULT_RELEASE)
    out: list[Entry] = []
    services = rcp.rc_conf(hostname)
    for service, values in guest_conf.items():
        services[service] = {**services.get(service, {}), **values}
    for service, values in services.items():
        out.append(Entry(f"/etc/rc.conf.d/{service}", shell_assignments(values)))
    for name, values in rcp.loader_conf(arch).items():
        out.append(Entry(f"/boot/loader.conf.d/{name}.conf", shell_assignments(values)))
    out += [
        Entry("/etc/ssh/sshd_config.d/fpvm.conf", sshd_dropin(release)),
        Entry("/usr/local/etc/sudoers.d/fpvm", sudoers(), 0o440),
        Entry("/etc/pf.conf", PF_CONF),
        Entry("/etc/sysctl.conf.local", SYSCTL_CONF),
        Entry("/etc/fstab", FSTAB),
        Entry("/usr/local/etc/containers/storage.conf", STORAGE_CONF),
        Entry("/firstboot", b""),
        Entry("/etc/tmpfiles.d/README", TMPFILES_README),  # the folder podman writes podman-docker.conf to
        Entry("/run", target="var/run"),
        Entry("/usr/bin/bash", target="/usr/local/bin/bash"),
        Entry("/usr/local/etc/rc.d/fpvm_growfs", GROWFS_RC, 0o555),
        Entry("/usr/local/bin/fpvm", FPVM_LAUNCHER, 0o755),
    ]
    for name, text in sorted(scripts.items()):
        if "/" in name or name in ("", ".", "..", "fpvm_growfs"):
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


def write(root: Path, items: Iterable[Entry]) -> list[str]:
    """Write ``items`` under ``root``; returns the guest paths that changed (a second run: none)."""
    changed: list[str] = []
    for item in items:
        dest = _inside(root, item.path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if item.target is not None:
            if dest.is_symlink() and os.readlink(dest) == item.target:
                continue
            if dest.exists() and not dest.is_symlink():
                raise OverlayError(f"{item.path} exists and is not a symbolic link")
            tmp = dest.with_name(f".{dest.name}.fpvm-link")
            if tmp.is_symlink():
                tmp.unlink()
            os.symlink(item.target, tmp)
            os.replace(tmp, dest)
        else:
            data = item.data or b""
            if (
                dest.is_file()
                and not dest.is_symlink()
                and dest.read_bytes() == data
                and (dest.stat().st_mode & 0o7777) == item.mode
            ):
                continue
            atomic_write(dest, data, mode=item.mode)
        changed.append(item.path)
    return changed


def apply_base_edits(root: Path) -> bool:
    """The one edit of a base file: make sshd read ``sshd_config.d`` (first values win, so on top)."""
    config = _inside(root, "/etc/ssh/sshd_config")
    if not config.is_file():
        raise OverlayError(f"{config} is missing: is FreeBSD-ssh installed in {root}?")
    text = config.read_text()
    if any(line.strip() == rcp.SSHD_INCLUDE for line in text.splitlines()):
        return False
    mode = config.stat().st_mode & 0o7777
    atomic_write(config, (rcp.SSHD_INCLUDE + "\n\n" + text).encode(), mode=mode)
    return True
