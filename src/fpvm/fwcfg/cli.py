"""``fpvm debug ...``: this area owns the ``debug`` group; ``fwcfg`` lists and reads fw_cfg items.

Kept cheap to import (it runs at boot): the transports are imported by the handler.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``debug fwcfg [--qmp SOCKET] list|get NAME``."""
    debug = sub.add_parser("debug", help="inspect what a VM receives", description="Debugging helpers.")
    debug.set_defaults(print_help=debug.print_help)
    debug_sub = debug.add_subparsers(dest="debug_command", metavar="COMMAND")

    fwcfg = debug_sub.add_parser(
        "fwcfg",
        help="list or read QEMU fw_cfg entries",
        description=(
            "List or read QEMU fw_cfg entries. Inside a guest the best transport is chosen "
            "(Linux sysfs, a qemufwcfg mount, FreeBSD /dev/io or /dev/mem); on a host, --qmp reads a "
            "running x86 QEMU through its QMP socket."
        ),
    )
    fwcfg.add_argument("--qmp", metavar="SOCKET", help="QMP unix socket of a running x86 QEMU")
    fwcfg.set_defaults(print_help=fwcfg.print_help)
    actions = fwcfg.add_subparsers(dest="fwcfg_command", metavar="ACTION")

    list_parser = actions.add_parser("list", help="one line per entry: name size select")
    list_parser.set_defaults(func=_list)
    get_parser = actions.add_parser("get", help="write an entry's bytes to stdout")
    get_parser.add_argument("name", metavar="NAME", help="entry name, e.g. opt/com.coreos/config")
    get_parser.set_defaults(func=_get)


def _list(args: argparse.Namespace) -> int:
    from fpvm.fwcfg import FwCfgError, open_device

    try:
        device = open_device(args.qmp)
        try:
            entries = device.list()
        finally:
            device.close()
    except FwCfgError as exc:
        print(f"fpvm debug fwcfg: {exc}", file=sys.stderr)
        return 1
    for entry in entries:
        select = "-" if entry.select is None else f"{entry.select:#06x}"
        print(f"{entry.name} {entry.size} {select}")
    return 0


def _get(args: argparse.Namespace) -> int:
    from fpvm.fwcfg import FwCfgError, open_device

    try:
        device = open_device(args.qmp)
        try:
            data = device.read(args.name)
        finally:
            device.close()
    except FwCfgError as exc:
        print(f"fpvm debug fwcfg: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0
