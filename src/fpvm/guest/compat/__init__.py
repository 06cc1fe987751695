"""linux-compat commands: what podman runs in its guest over ssh, done the FreeBSD way.

podman logs in after Ready and runs Linux commands (``chattr``, ``mount -t 9p``/``virtiofs``, a bash
script ending in ``systemctl daemon-reload``, ``systemd-tmpfiles``). The image puts
``/usr/local/libexec/fpvm/linux-compat`` first on sudo's secure_path and root's PATH; each file there
is a thin launcher (``launchers()``) into ``fpvm guest shim NAME ARGS...``, which lands here.

``main(argv)`` takes ``[--record FILE] [--root DIR] NAME ARGS...``: with ``--record`` the FreeBSD
commands are appended to FILE as JSON lines ``{"argv": [...]}`` instead of being run; ``--root``
(default ``/``) is where files (proxy environment, tmpfiles links, the log) are read and written;
``/`` (or anything that is the running system's root) is refused unless this is the fpvm VM itself
(``fpvm.hostroot``), so a shim run by hand on a host never writes the host's files.
Standard library only; each command's module is imported only when it is run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from fpvm.guest.compat.base import Shim, run_guarded
from fpvm.guest.compat.launchers import FPVM, LAUNCHER_DIR, launchers
from fpvm.hostroot import HostRootError, refuse_system_root

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
HELP = ("-h", "--help")


def _doc(name: str) -> str:
    """The shim's module docstring, as plain text (it is the user-facing description too)."""
    doc = sys.modules[_runner(COMMANDS[name]).__module__].__doc__ or name
    return doc.replace("``", "").strip()


def help_parser() -> argparse.ArgumentParser:
    """A parser that only renders help: ``main`` reads its words itself (they must reach the shim
    untouched), but ``--help`` and tests/test_help.py see the same options and commands here."""
    parser = argparse.ArgumentParser(
        prog="fpvm guest shim",
        description="Run one linux-compat command the FreeBSD way: what podman runs in its guest over "
        f"ssh. The image's launchers in {LAUNCHER_DIR} call this; NAME ARGS... are passed on untouched.",
        epilog="`fpvm guest shim NAME --help` says what NAME does on FreeBSD.",
    )
    parser.add_argument(
        "--record",
        metavar="FILE",
        help="append the FreeBSD commands to FILE as JSON lines instead of running them "
        "(default: run them)",
    )
    parser.add_argument(
        "--root", metavar="DIR", default="/", help="where files are read and written (default: %(default)s)"
    )
    names = parser.add_subparsers(dest="name", metavar="NAME", title="shims (NAME)")
    for name in sorted(COMMANDS):
        doc = _doc(name)
        shim = names.add_parser(
            name,
            help=doc.splitlines()[0],
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            prog=f"fpvm guest shim {name}",
        )
        shim.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help=f"{name}'s own arguments")
    return parser


def _help(argv: list[str]) -> int:
    """``--help`` before NAME, or as NAME's first argument: print to stdout, exit 0."""
    try:
        help_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _runner(module: str) -> Callable[[Shim, list[str]], int]:
    """The ``run`` of one command's module, imported only now (each shim call loads just its own)."""
    if module == "mount":
        from fpvm.guest.compat.mount import run
    elif module == "chattr":
        from fpvm.guest.compat.chattr import run
    elif module == "systemctl":
        from fpvm.guest.compat.systemctl import run
    elif module == "tmpfiles":
        from fpvm.guest.compat.tmpfiles import run
    else:
        raise KeyError(f"no linux-compat module named {module!r}")
    return run


def main(argv: list[str]) -> int:
    """Run one linux-compat command; returns its exit status (2 for a usage error)."""
    args = list(argv)
    if args[:1] and args[0] in HELP:
        return _help(["--help"])
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
    if rest[:1] and rest[0] in HELP:
        return _help([name.rsplit("/", 1)[-1], "--help"])
    try:
        refuse_system_root(root)  # `/` only inside the fpvm VM (fpvm.hostroot)
    except HostRootError as exc:
        print(f"fpvm guest shim: error: {exc}", file=sys.stderr)
        return 1
    run = _runner(module)
    shim = Shim.make(name.rsplit("/", 1)[-1], root=root, record=record)
    try:
        return run_guarded(shim, run, rest)
    finally:
        shim.flush()


__all__ = ["COMMANDS", "FPVM", "LAUNCHER_DIR", "help_parser", "launchers", "main"]
