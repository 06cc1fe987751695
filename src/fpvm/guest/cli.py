"""``fpvm guest ...``: the agent's commands. Handlers import their modules lazily (boot time)."""

from __future__ import annotations

import argparse
import sys

READY_HELP = "wait for sshd and the API socket, then send Ready to the host"
BOOT_HELP = "the boot step: find the config, provision on first boot, per-boot links, proxy and mounts"


def _refused(command: str, root: str) -> bool:
    """Print the one-line refusal when ``root`` is the running system's own root (fpvm.hostroot)."""
    from fpvm.hostroot import HostRootError, refuse_system_root

    try:
        refuse_system_root(root)
    except HostRootError as exc:
        print(f"fpvm guest {command}: error: {exc}", file=sys.stderr)
        return True
    return False


def _provision(args: argparse.Namespace) -> int:
    from fpvm.guest.provision import main

    if _refused("provision", args.root):
        return 1
    return main(args.root, args.config, args.record, args.no_ready, sys.stdout)


def _plan(args: argparse.Namespace) -> int:
    from fpvm.guest.show import plan_main

    return plan_main(args.config, args.root, args.json)


def _show(args: argparse.Namespace) -> int:
    from fpvm.guest.show import main

    return int(main(args.file, args.json))


def _shim(args: argparse.Namespace) -> int:
    from fpvm.guest.compat import main

    return int(main(list(args.argv)))


def _shim_parser() -> argparse.ArgumentParser:
    from fpvm.guest.compat import help_parser

    return help_parser()


def _ready_parser() -> argparse.ArgumentParser:
    from fpvm.guest import ready

    # The options live with the readiness module; it is imported only when `ready` runs.
    parser = argparse.ArgumentParser(prog="fpvm guest ready", description=READY_HELP)
    ready.add_arguments(parser)
    return parser


def _ready(args: argparse.Namespace) -> int:
    from fpvm.guest import ready

    ns = _ready_parser().parse_args(args.argv)
    if _refused("ready", ns.root or "/"):
        return 1
    return int(ready.ready_main(ns))


def _boot_parser() -> argparse.ArgumentParser:
    from fpvm.guest import rcd

    parser = argparse.ArgumentParser(prog="fpvm guest boot", description=BOOT_HELP)
    rcd.add_boot_arguments(parser)
    return parser


def _boot(args: argparse.Namespace) -> int:
    from fpvm.guest import rcd

    ns = _boot_parser().parse_args(args.argv)
    if _refused("boot", ns.root or "/"):
        return 1
    return int(rcd.boot_main(ns))


def register_ignition_show(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fpvm ignition show`` to the ignition group (``cmds``, from ``fpvm.ignition.cli.register``).

    Registered from here because it is the guest's plan seen from a config: only the guest knows what
    FreeBSD applies, translates or ignores, and ignition/ may not import guest/. It reads ``-`` and
    reports an unreadable FILE with exit status 2, like ``validate``.
    """
    show = cmds.add_parser(
        "show",
        help="summarise what the FreeBSD guest will do with a config",
        description="List the config's users, files, directories, links, units, devices and kernel "
        "arguments, each marked apply, translate or ignore, with the reason for every translate and "
        "ignore. Exit status: 0 for a valid config, 1 for an invalid one, 2 when FILE cannot be read.",
    )
    show.add_argument("file", metavar="FILE", help="config file, or - for standard input")
    show.add_argument("--json", action="store_true", help="machine-readable output (default: text)")
    show.set_defaults(func=_show)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fpvm guest`` and its subcommands."""
    guest = sub.add_parser("guest", help="the FreeBSD guest agent (Ignition -> provisioned system)")
    guest.set_defaults(print_help=guest.print_help)
    gsub = guest.add_subparsers(dest="guest_command", metavar="COMMAND")

    p = gsub.add_parser("provision", help="apply an Ignition config to a root")
    p.add_argument("--root", default="/", help="target root (default: /)")
    p.add_argument("--config", required=True, metavar="FILE", help="Ignition config file")
    p.add_argument("--record", metavar="FILE", help="record FreeBSD commands to FILE instead of running them")
    p.add_argument("--no-ready", action="store_true", help="do not signal readiness to the host")
    p.set_defaults(func=_provision)

    p = gsub.add_parser("plan", help="show what provision would do")
    p.add_argument("--config", required=True, metavar="FILE", help="Ignition config file")
    p.add_argument(
        "--root", metavar="DIR", help="root to plan against (reads fpvm's mount table); default: none"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_plan)

    # prefix_chars="+": no option of ours may start with "-", so every word after `shim` (`ready`,
    # `boot`) reaches the handler untouched, options included; their own parsers render the help.
    for name, text, func, argv_parser in (
        ("shim", "linux-compat command shim (argv passed through untouched)", _shim, _shim_parser),
        ("ready", READY_HELP, _ready, _ready_parser),
        ("boot", BOOT_HELP, _boot, _boot_parser),
    ):
        p = gsub.add_parser(name, help=text, prefix_chars="+", add_help=False)
        p.add_argument("argv", nargs=argparse.REMAINDER, help=f"see `fpvm guest {name} --help`")
        p.set_defaults(func=func, argv_parser=argv_parser)
