"""`fpvm ignition validate|show`: checking configs as upstream Ignition would, and summarising them.

``register`` only builds argparse parsers; the engine is imported inside the handlers so that the
guest's boot path does not pay for it when running other commands.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``ignition validate`` and ``ignition show`` to the top-level parser."""
    group = sub.add_parser("ignition", help="validate and inspect Ignition configs (spec 3.0-3.6)")
    group.set_defaults(print_help=group.print_help)
    cmds = group.add_subparsers(dest="ignition_command", metavar="COMMAND")

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

    show = cmds.add_parser(
        "show",
        help="summarise what the FreeBSD guest will do with a config",
        description="List the config's users, files, directories, links, units, devices and kernel "
        "arguments, each marked apply, translate or ignore, with the reason for every translate and "
        "ignore. Exit status: 0 for a valid config, 1 for an invalid one, 2 when FILE cannot be read.",
    )
    show.add_argument("file", metavar="FILE", help="config file, or - for standard input")
    show.add_argument("--json", action="store_true", help="machine-readable output (default: text)")
    show.set_defaults(func=run_show)


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


def run_show(args: argparse.Namespace) -> int:
    """Handled by the guest area, which knows what FreeBSD applies, translates or ignores; it reads
    ``-`` and reports an unreadable FILE with ``EXIT_UNREADABLE`` like ``validate``."""
    from fpvm.guest import show  # type: ignore[attr-defined, unused-ignore]

    return int(show.main(args.file, args.json))
