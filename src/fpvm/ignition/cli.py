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
        description="Check each FILE (- for standard input) as upstream ignition-validate does and print "
        "a verdict per file (FILE: valid / FILE: invalid (N errors)) followed by its errors and warnings; "
        "where upstream's wording names Go types, a plain hint follows. Exit status: 0 when every FILE "
        "is valid, 1 when any is invalid, 2 for usage errors or a FILE that cannot be read.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="config file, or - for standard input")
    output = validate.add_mutually_exclusive_group()
    output.add_argument(
        "--json", action="store_true", help="one JSON object per file and line on stdout (default: text)"
    )
    output.add_argument("-q", "--quiet", action="store_true", help="print nothing: the exit status only")
    validate.set_defaults(func=run_validate)
    return cmds


# Exit status for a FILE that cannot be read (missing, a directory, no permission), both commands.
EXIT_UNREADABLE = 2


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    with open(name, "rb") as fh:
        return fh.read()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def verdict(name: str, report: Any) -> list[str]:
    """``FILE: valid`` / ``FILE: invalid (N errors)``, then one indented line per finding (and hint)."""
    from fpvm.ignition.hints import hint

    errors, warnings = report.errors, report.warnings
    counts = [_plural(len(errors), "error")] if errors else []
    counts += [_plural(len(warnings), "warning")] if warnings else []
    state = "valid" if report.valid else "invalid"
    lines = [f"{name}: {state}" + (f" ({', '.join(counts)})" if counts else "")]
    for entry in [*errors, *warnings]:
        lines.append(f"  {entry.kind}: {entry.path}: {entry.message}")
        plain = hint(entry.path, entry.message)
        if plain:
            lines.append(f"    hint: {plain}")
    return lines


def _finding(entry: Any) -> dict[str, str]:
    from fpvm.ignition.hints import hint

    out = {"path": entry.path, "message": entry.message}
    plain = hint(entry.path, entry.message)
    if plain:
        out["hint"] = plain
    return out


def run_validate(args: argparse.Namespace) -> int:
    import json

    from fpvm.ignition import check

    status = 0
    for name in args.files:
        try:
            data = _read(name)
        except OSError as exc:
            reason = f"cannot read: {exc.strerror or exc}"
            if not args.quiet:
                print(f"{name}: {reason}", file=sys.stderr)
            if args.json:
                error = {"path": "$", "message": reason}
                print(json.dumps({"file": name, "valid": False, "errors": [error], "warnings": []}))
            status = EXIT_UNREADABLE
            continue
        report = check(data)
        if args.json:
            record = {
                "file": name,
                "valid": report.valid,
                "errors": [_finding(e) for e in report.errors],
                "warnings": [_finding(e) for e in report.warnings],
            }
            print(json.dumps(record, ensure_ascii=True))
        elif not args.quiet:
            print("\n".join(verdict(name, report)))
        if not report.valid and status == 0:
            status = 1
    return status
