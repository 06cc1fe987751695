"""The single ``fpvm`` command.

Each area registers its own subcommands from ``fpvm.<area>.cli`` so that modules stay small and the
guest's boot path imports only what it runs: a ``register`` function must not import heavy modules at
module level; handlers import what they need when called.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from fpvm import __version__

# Not typing.TYPE_CHECKING: importing typing costs every guest command ~5 ms (mypy treats the name the same).
TYPE_CHECKING = False
if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


# One function per area, each importing that area's ``cli`` module only when called. Each module
# defines ``register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser])`` and sets
# ``func`` on the parsers it adds: ``func(args: argparse.Namespace) -> int`` returns the exit status.
def _ignition(sub: Subparsers) -> None:
    # `ignition show` is the guest's plan seen from a config: the guest adds it (ignition/ may not
    # import guest/).
    from fpvm.guest.cli import register_ignition_show
    from fpvm.ignition.cli import register

    register_ignition_show(register(sub))


def _guest(sub: Subparsers) -> None:
    from fpvm.guest.cli import register

    register(sub)


def _fwcfg(sub: Subparsers) -> None:
    from fpvm.fwcfg.cli import register

    register(sub)


def _image(sub: Subparsers) -> None:
    from fpvm.image.cli import register

    register(sub)


def _machine(sub: Subparsers) -> None:
    from fpvm.machine.cli import register

    register(sub)


# Top-level command -> the area that registers it, in the order they appear in --help. An area may
# register several top-level commands.
COMMANDS: dict[str, Callable[[Subparsers], None]] = {
    "ignition": _ignition,
    "guest": _guest,
    "debug": _fwcfg,
    "build": _image,
    "image": _image,
    "machine": _machine,
    "podman-machine": _machine,
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
    for register in dict.fromkeys(wanted):
        register(sub)
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
