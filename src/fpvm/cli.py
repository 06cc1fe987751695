"""The single ``fpvm`` command.

Each area registers its own subcommands from ``fpvm.<area>.cli`` so that modules stay small and the
guest's boot path imports only what it runs: a ``register`` function must not import heavy modules at
module level; handlers import what they need when called.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from fpvm import __version__

# Top-level command -> the module that registers it, in the order they appear in --help. Each module
# defines ``register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None`` and
# sets ``func`` on the parsers it adds: ``func(args: argparse.Namespace) -> int`` returns the exit
# status. A module may register several top-level commands.
#
# A command that passes its words on untouched (``guest shim|ready|boot``: ``prefix_chars="+"``,
# ``add_help=False``) sets ``argv_parser`` too: a function returning the parser that reads those words,
# built only when called. tests/test_help.py walks the tree through it, so such commands get their
# ``--help`` and option checks like every other one.
COMMANDS: dict[str, str] = {
    "ignition": "fpvm.ignition.cli",
    "guest": "fpvm.guest.cli",
    "debug": "fpvm.fwcfg.cli",
    "build": "fpvm.image.cli",
    "image": "fpvm.image.cli",
    "machine": "fpvm.machine.cli",
    "podman-machine": "fpvm.machine.cli",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every area, or only the area that owns ``command``.

    The guest runs ``fpvm guest …`` and the linux-compat shims at boot and on every podman ssh
    command, so they should not pay for importing the image builder and the host launcher.
    """
    parser = argparse.ArgumentParser(prog="fpvm", description="FreeBSD VMs for Podman.")
    parser.add_argument("--version", action="version", version=f"fpvm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = [COMMANDS[command]] if command in COMMANDS else list(COMMANDS.values())
    for name in dict.fromkeys(wanted):
        importlib.import_module(name).register(sub)
    return parser


def _first_command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_first_command(argv))
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # A group given without its subcommand: show that group's help (or the top-level help).
        helper = getattr(args, "print_help", parser.print_help)
        helper(sys.stderr)
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        # A file or directory the handler did not expect to be missing, a directory, unreadable ...
        if os.environ.get("FPVM_DEBUG"):
            raise
        print(f"fpvm {args.command}: error: {_os_error(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: one line for the user, the traceback with FPVM_DEBUG=1
        if os.environ.get("FPVM_DEBUG"):
            raise
        print(
            f"fpvm {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(run again with FPVM_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


def _os_error(exc: OSError) -> str:
    """``PATH: reason`` (what the user can act on), not ``[Errno 2] ...``."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        return f"{exc.filename}: {reason}"
    return reason


if __name__ == "__main__":
    raise SystemExit(main())
