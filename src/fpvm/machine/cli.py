"""``fpvm machine ...`` and ``fpvm podman-machine ...``: argument parsing only.

Handlers import the implementation when called, so ``fpvm --help`` and the guest's boot path do not
pay for rich or subprocess setup.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from fpvm import arch


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print MachineError as one clear message (exit 1) instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        from fpvm.machine.errors import MachineError

        try:
            return func(args)
        except MachineError as exc:
            print(f"fpvm: error: {exc}", file=sys.stderr)
            return 1

    return run


def _init(args: argparse.Namespace) -> int:
    from fpvm.machine import lifecycle

    machine = lifecycle.init(
        args.name,
        args.image,
        arch=args.arch or arch.host(),
        cpus=args.cpus,
        memory=args.memory,
        disk_size=args.disk_size,
        volumes=args.volume,
        ssh_port=args.ssh_port,
        default_connection=args.default,
        tls_verify=args.tls_verify == "true",
    )
    print(
        f"Machine {machine.name} created ({machine.arch}, "
        f"{machine.disk_size} GiB {machine.disk_format} disk)."
    )
    if args.now:
        return lifecycle.start(machine.name)
    print(f"Start it with: fpvm machine start {machine.name}")
    return 0


def _start(args: argparse.Namespace) -> int:
    from fpvm.machine import lifecycle

    return lifecycle.start(
        args.name,
        accel=args.accel,
        network=args.network,
        timeout=args.timeout,
        dry_run=args.dry_run,
        default_connection=True if args.default else None,
    )


def _stop(args: argparse.Namespace) -> int:
    from fpvm.machine import lifecycle

    return lifecycle.stop(args.name, timeout=args.timeout, force=args.force)


def _ssh(args: argparse.Namespace) -> int:
    from fpvm.machine import lifecycle

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    return lifecycle.ssh(args.name, user=args.user, command=command)


def _console(args: argparse.Namespace) -> int:
    from fpvm.machine import lifecycle

    return lifecycle.console(args.name)


def _list(args: argparse.Namespace) -> int:
    from fpvm.machine import lifecycle

    return lifecycle.list_machines(as_json=args.json)


def _inspect(args: argparse.Namespace) -> int:
    from fpvm.machine import lifecycle

    return lifecycle.inspect(args.names)


def _rm(args: argparse.Namespace) -> int:
    from fpvm.machine import lifecycle

    return lifecycle.rm(args.name, force=args.force)


def _pm_console(args: argparse.Namespace) -> int:
    from fpvm.machine import podman_machine

    return podman_machine.console(
        args.name, config=args.config, wait=args.wait, attach_now=not args.no_attach
    )


def _pm_doctor(args: argparse.Namespace) -> int:
    from fpvm.machine import podman_machine

    return podman_machine.doctor(args.name, config=args.config, as_json=args.json)


def _pm_setup(args: argparse.Namespace) -> int:
    from fpvm.machine import podman_helpers

    return podman_helpers.setup()


def _pm_teardown(args: argparse.Namespace) -> int:
    from fpvm.machine import podman_helpers

    return podman_helpers.teardown()


def _group(
    sub: argparse._SubParsersAction[Any], name: str, help_text: str
) -> argparse._SubParsersAction[Any]:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(print_help=parser.print_help)
    group: argparse._SubParsersAction[Any] = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
    return group


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``machine`` and ``podman-machine`` to the top-level parser."""
    m = _group(sub, "machine", "Run a FreeBSD VM with QEMU and connect podman to it.")

    p = m.add_parser("init", help="create a machine from a FreeBSD disk image")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--image",
        required=True,
        metavar="PATH|URL",
        help="raw or qcow2, optionally zstd/xz/gzip: a file, an http(s) URL, or docker://REGISTRY/NAME:TAG",
    )
    p.add_argument(
        "--tls-verify",
        choices=("true", "false"),
        default="true",
        help="for docker:// images: verify the registry's TLS certificate (default true; false also "
        "allows plain http)",
    )
    p.add_argument(
        "--arch", type=arch.argparse_type, help="amd64 (x86_64) or aarch64 (arm64); default: host's"
    )
    p.add_argument("--cpus", type=int, default=2, help="virtual CPUs (default: %(default)s)")
    p.add_argument(
        "--memory", type=int, default=2048, metavar="MiB", help="memory in MiB (default: %(default)s)"
    )
    p.add_argument(
        "--disk-size", type=int, default=20, metavar="GiB", help="disk size in GiB (default: %(default)s)"
    )
    p.add_argument(
        "-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]", help="share a host folder (9p)"
    )
    p.add_argument(
        "--ssh-port", type=int, help="host port forwarded to the guest's ssh (default: a free one)"
    )
    p.add_argument("--default", action="store_true", help="make fpvm-NAME podman's default connection")
    p.add_argument("--now", action="store_true", help="start the machine right away")
    p.set_defaults(func=_guard(_init))

    p = m.add_parser("start", help="boot the machine and register the podman connection")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--dry-run", action="store_true", help="print the QEMU command line and do nothing else")
    p.add_argument(
        "--accel",
        choices=("auto", "hvf", "kvm", "tcg"),
        default="auto",
        help="QEMU accelerator (default: auto: KVM on Linux, HVF on macOS, tried first; if it cannot run "
        "a VM here, TCG with a warning). kvm/hvf: an error when unusable. tcg: emulation, 10-50x slower",
    )
    p.add_argument(
        "--network",
        choices=("auto", "user", "gvproxy"),
        default="auto",
        help="auto uses gvproxy when it is installed, else QEMU's user network (default: %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="how long to wait for Ready (default: 300, or 1200 with TCG)",
    )
    p.add_argument("--default", action="store_true", help="make fpvm-NAME podman's default connection")
    p.set_defaults(func=_guard(_start))

    p = m.add_parser("stop", help="power the machine off (ACPI, then quit QEMU after --timeout)")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--timeout",
        type=float,
        default=60,
        metavar="SECONDS",
        help="how long the guest may take to power off (default: %(default)s)",
    )
    p.add_argument("--force", action="store_true", help="quit QEMU at once")
    p.set_defaults(func=_guard(_stop))

    p = m.add_parser("ssh", help="log in to the machine (as root), or run a command there")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--user", default="root", help="root or core; options go before NAME (default: root)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")
    p.set_defaults(func=_guard(_ssh))

    p = m.add_parser("console", help="attach to the serial console (Ctrl-] detaches)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=_guard(_console))

    p = m.add_parser("list", help="list machines")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_guard(_list))

    p = m.add_parser("inspect", help="show machines as JSON")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=_guard(_inspect))

    p = m.add_parser("rm", help="delete a machine and its podman connection")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--force", action="store_true", help="stop it first when running")
    p.set_defaults(func=_guard(_rm))

    pm = _group(sub, "podman-machine", "Helpers for `podman machine` users running a FreeBSD image.")
    p = pm.add_parser("console", help="add a serial console to a podman 4.x qemu machine and attach to it")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--config", metavar="JSON", help="the machine's JSON (default: podman's location)")
    p.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="wait this long for the machine to start (default: 0, do not wait)",
    )
    p.add_argument("--no-attach", action="store_true", help="only add the console")
    p.set_defaults(func=_guard(_pm_console))

    p = pm.add_parser("doctor", help="check a podman machine's ssh port, ready socket and API socket")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--config", metavar="JSON", help="the machine's JSON (default: podman's location)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_guard(_pm_doctor))

    p = pm.add_parser("setup", help="podman >= 5.2 on Linux: share folders with FreeBSD machines over 9p")
    p.set_defaults(func=_guard(_pm_setup))
    p = pm.add_parser("teardown", help="remove what `fpvm podman-machine setup` installed")
    p.set_defaults(func=_guard(_pm_teardown))
