"""`fpvm ignition validate`: checking configs as upstream Ignition would.

``register`` only builds argparse parsers; the engine is imported inside the handlers so that the
guest's boot path does not pay for it when running other commands. ``fpvm ignition show`` is a view of
the guest's plan, so the guest area adds it to this group (``fpvm.guest.cli.register_ignition_show``,
called from ``fpvm.cli``): ignition/ never imports guest/.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> argparse._SubParsersAction[Any]:
    """Add ``ignition validate`` to the top-level parser; return the group's subcommands (for ``show``)."""
    group = sub.add_parser("ignition", help="validate and inspect Ignition configs (spec 3.0-3.6)")
    group.set_defaults(print_help=group.print_help)
    cmds: argparse._SubParsersAction[Any] = group.add_subparsers(dest="ignition_command", metavar="COMMAND")

    validate = cmds.add_parser(
        "validate",
        help="check configs like upstream ignition-validate",
        description="Exit 0 when every FILE is valid (warnings go to stderr), 1 when any is invalid, "
        "2 for usage errors or unreadable files. Use - for standard input.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument("--json", action="store_true", help="one JSON object per file and line on stdout")
    validate.set_defaults(func=run_validate)
    return cmds


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    with open(name, "rb") as fh:
        return fh.read()


def run_validate(args: argparse.Namespace) -> int:
    import json

    from fpvm.ignition import check

    status = 0
    for name in args.files:
        try:
            data = _read(name)
        except OSError as exc:
            reason = f"cannot read: {exc.strerror or exc}"
            print(f"{name}: {reason}", file=sys.stderr)
            if args.json:
                error = {"path": "$", "message": reason}
                print(json.dumps({"file": name, "valid": False, "errors": [error], "warnings": []}))
            status = 2
            continue
        report = check(data)
        if args.json:
            record = {
                "file": name,
                "valid": report.valid,
                "errors": [{"path": e.path, "message": e.message} for e in report.errors],
                "warnings": [{"path": e.path, "message": e.message} for e in report.warnings],
            }
            print(json.dumps(record, ensure_ascii=True))
        else:
            for entry in report.errors:
                print(f"{name}: {entry.path}: {entry.message}", file=sys.stderr)
            for entry in report.warnings:
                print(f"{name}: {entry.path}: warning: {entry.message}", file=sys.stderr)
        if not report.valid and status == 0:
            status = 1
    return status
