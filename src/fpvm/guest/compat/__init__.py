"""linux-compat commands: what podman runs in its guest over ssh, done the FreeBSD way.

podman logs in after Ready and runs Linux commands (``chattr``, ``mount -t 9p``/``virtiofs``, a bash
script ending in ``systemctl daemon-reload``, ``systemd-tmpfiles``). The image puts
``/usr/local/libexec/fpvm/linux-compat`` first on sudo's secure_path and root's PATH; each file there
is a thin launcher (``launchers()``) into ``fpvm guest shim NAME ARGS...``, which lands here.

``main(argv)`` takes ``[--record FILE] [--root DIR] NAME ARGS...``: with ``--record`` the FreeBSD
commands are appended to FILE as JSON lines ``{"argv": [...]}`` instead of being run; ``--root``
(default ``/``) is where files (proxy environment, tmpfiles links, the log) are read and written.
Standard library only; each command's module is imported only when it is run.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from fpvm.guest.compat.base import Shim, run_guarded
from fpvm.guest.compat.launchers import FPVM, LAUNCHER_DIR, launchers

# command name -> module under fpvm.guest.compat with ``run(shim, args) -> int``
COMMANDS: dict[str, str] = {
    "mount": "mount",
    "chattr": "chattr",
    "systemctl": "systemctl",
    "systemd-tmpfiles": "tmpfiles",
}

USAGE = "usage: fpvm guest shim [--record FILE] [--root DIR] NAME [ARGS...]; NAME is one of: " + ", ".join(
    sorted(COMMANDS)
)


def main(argv: list[str]) -> int:
    """Run one linux-compat command; returns its exit status (2 for a usage error)."""
    args = list(argv)
    record: str | None = None
    root = "/"
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if opt == "--":
            break
        key, eq, value = opt.partition("=")
        if key not in ("--record", "--root"):
            print(f"fpvm guest shim: unknown option {opt}\n{USAGE}", file=sys.stderr)
            return 2
        if not eq:
            if not args:
                print(f"fpvm guest shim: {key} needs a value\n{USAGE}", file=sys.stderr)
                return 2
            value = args.pop(0)
        if key == "--record":
            record = value
        else:
            root = value
    if not args:
        print(USAGE, file=sys.stderr)
        return 2
    name, rest = args[0], args[1:]
    module = COMMANDS.get(name.rsplit("/", 1)[-1])
    if module is None:
        print(f"fpvm guest shim: unknown command {name!r}\n{USAGE}", file=sys.stderr)
        return 2
    run: Callable[[Shim, list[str]], int] = importlib.import_module(f"fpvm.guest.compat.{module}").run
    shim = Shim.make(name.rsplit("/", 1)[-1], root=root, record=record)
    try:
        return run_guarded(shim, run, rest)
    finally:
        shim.flush()


__all__ = ["COMMANDS", "FPVM", "LAUNCHER_DIR", "launchers", "main"]
