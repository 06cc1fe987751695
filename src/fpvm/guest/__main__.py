"""``python3 -m fpvm.guest COMMAND ...``: the agent's commands without the rest of ``fpvm``.

The boot path (rc.d) should not pay for building the parsers of the image builder and the host
launcher; this entry registers only ``fpvm guest``'s subcommands and behaves like ``fpvm guest``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from fpvm.guest.cli import register

    parser = argparse.ArgumentParser(prog="fpvm")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(["guest", *(sys.argv[1:] if argv is None else argv)])
    func = getattr(args, "func", None)
    if func is None:
        getattr(args, "print_help", parser.print_help)(sys.stderr)
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
