"""The single ``fpvm`` command.

Each area registers its own subcommands from ``fpvm.<area>.cli`` so that modules stay small and the
guest's boot path imports only what it runs: a ``register`` function must not import heavy modules at
module level; handlers import what they need when called.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fpvm import __version__

# (module, ...) in the order they appear in --help. Each module defines
# ``register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None`` and sets
# ``func`` on the parsers it adds: ``func(args: argparse.Namespace) -> int`` returns the exit status.
AREAS: tuple[str, ...] = (
    "fpvm.ignition.cli",
    "fpvm.guest.cli",
    "fpvm.fwcfg.cli",
    "fpvm.image.cli",
    "fpvm.machine.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fpvm", description="FreeBSD VMs for Podman.")
    parser.add_argument("--version", action="version", version=f"fpvm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in AREAS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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


if __name__ == "__main__":
    raise SystemExit(main())
