"""Never write the running system's own root by mistake.

Every fpvm command that writes a system root (``fpvm image overlay DIR``, ``fpvm guest
provision/boot/ready --root``, the linux-compat shims' ``--root``) calls :func:`refuse_system_root`
before it writes anything. On a host (a developer's Linux or macOS machine, a build server) the
root of the running system is never a valid target: a mistyped ``--root /`` or ``overlay /`` would
rewrite the host's ``/etc/fstab``, ``/etc/pf.conf`` or its accounts.

The one place where writing ``/`` is the point is the fpvm VM itself: its rc.d script runs
``fpvm guest boot --root /`` at every boot and podman's ssh commands run the shims on ``/``. That
place is recognised by one test, :func:`in_fpvm_guest`: the system is FreeBSD *and* fpvm's rc.d
script ``/usr/local/etc/rc.d/fpvm`` is installed as a regular file. Only fpvm's image overlay
installs that script, and a system that has it already lets fpvm write its root at every boot.

"The system's own root" is decided after resolution, so ``/``, ``//``, ``/./``, ``/tmp/..``, a
symlink to ``/`` and a bind mount of ``/`` (same device and inode) are all the root.

A ground-floor module beside fsutil, not the guest's: ``fpvm image overlay`` and the guest's commands
both call it. Standard library only (the guest imports it at boot).
"""

from __future__ import annotations

import os
import stat

SYSTEM_ROOT = "/"  # the running system's root (tests point it at a staged tree)
GUEST_MARKER = "usr/local/etc/rc.d/fpvm"  # relative to SYSTEM_ROOT; installed only by fpvm's image


class HostRootError(ValueError):
    """The target is the running system's own root and this is not an fpvm VM."""


def system_name() -> str:
    """The kernel's name (``FreeBSD``, ``Linux``, ``Darwin``): platform.system() without its import."""
    return os.uname().sysname


def marker_path() -> str:
    """Where the marker of an fpvm VM is on the running system."""
    return os.path.join(SYSTEM_ROOT, GUEST_MARKER)


def in_fpvm_guest() -> bool:
    """True on FreeBSD with fpvm's rc.d script installed: the one system whose root fpvm may write."""
    if system_name() != "FreeBSD":
        return False
    try:
        return stat.S_ISREG(os.lstat(marker_path()).st_mode)
    except OSError:
        return False


def is_system_root(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is, or resolves to, the running system's root.

    Three views, any of which is enough: the resolved path (``..`` of a component that does not exist
    yet counts lexically, as ``mkdir -p`` would make it exist), and the device and inode (a bind
    mount of ``/`` elsewhere is the same directory).
    """
    text = os.fspath(path)
    system = os.path.realpath(SYSTEM_ROOT)
    if os.path.realpath(os.path.abspath(text)) == system:
        return True
    try:
        st = os.stat(text)
        sys_st = os.stat(system)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (sys_st.st_dev, sys_st.st_ino)


def refuse_system_root(path: str | os.PathLike[str]) -> None:
    """Raise HostRootError when ``path`` is the running system's root, unless inside an fpvm VM."""
    if not is_system_root(path) or in_fpvm_guest():
        return
    raise HostRootError(
        f"refusing to write {os.fspath(path)!r}: it is this system's own root (/); fpvm writes / only "
        f"on FreeBSD inside an fpvm VM (which has {marker_path()}); give a staging directory instead"
    )
