"""``chattr``: podman toggles Fedora CoreOS's immutable root (``chattr -i /`` ... ``chattr +i /``).

FreeBSD's root is not immutable, so ``+i``/``-i`` succeed without doing anything (the exit status
matters: it is the status of podman's whole ``chattr -i / ; mkdir -p DIR ; chattr +i /`` line).
Other attributes have no FreeBSD meaning here: a clear error that points at chflags(1).
"""

from __future__ import annotations

from fpvm.guest.compat.base import Shim
from fpvm.guest.rootfs import UnsafePathError

FLAGS = ("-R", "-V", "-f")


def run(shim: Shim, args: list[str]) -> int:
    modes: list[str] = []
    paths: list[str] = []
    for a in args:
        if a in FLAGS:
            continue
        if a[:1] in "+-=" and len(a) > 1 and not paths:
            modes.append(a)
        else:
            paths.append(a)
    if not modes or not paths:
        return shim.error("usage: chattr (+|-)i PATH...  (only the immutable flag is supported)")
    for mode in modes:
        if mode[0] == "=" or set(mode[1:]) != {"i"}:
            return shim.error(
                f"attribute change {mode!r} is not supported on FreeBSD; only +i/-i (a no-op) are, "
                "see chflags(1) for FreeBSD's file flags"
            )
    for path in paths:
        try:
            present = shim.root.exists(path)
        except UnsafePathError as exc:
            return shim.error(str(exc))
        if not present:
            return shim.error(f"{path}: No such file or directory")
    shim.info(f"{' '.join(modes)} {' '.join(paths)}: nothing to do on FreeBSD (no immutable root)")
    return 0
