"""Boot integration: the rc.d scripts and ``fpvm guest boot``, the step the ``fpvm`` script runs.

Two rc.d scripts (text in ``fpvm/guest/files/rc.d/``, installed in ``/usr/local/etc/rc.d``): ``fpvm``
runs ``fpvm guest boot`` on every boot (no ``KEYWORD: firstboot`` on purpose: rc would skip it on
later boots, and mounts, API socket links and proxy settings are needed on every boot); ``fpvm_ready``
starts ``fpvm guest ready`` in the background with daemon(8), so the wait for sshd and the API socket
does not hold up the rest of the boot.

``fpvm guest boot`` provisions on the first boot, or on any boot until one has succeeded (on later
boots a changed config is only logged: Ignition applies once), and on every boot makes the podman
users' API socket links, applies the host's proxy settings and (after the first boot, whose plan has
them) the mounts.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, TextIO

from fpvm.guest.actions import Action
from fpvm.safetext import MAX_SHOWN, printable

if TYPE_CHECKING:
    from fpvm.guest.configsource import FwCfgDevice, Probe
    from fpvm.guest.context import ApplyContext
    from fpvm.ignition.model import Config

RC_D = "/usr/local/etc/rc.d"
SCRIPTS: tuple[str, ...] = ("fpvm", "fpvm_ready")
# What the image writes so both scripts run (rc configuration only in /etc/rc.conf.d/<service>).
RC_CONF: dict[str, dict[str, str | None]] = {
    "fpvm": {"fpvm_enable": "YES"},
    "fpvm_ready": {"fpvm_ready_enable": "YES"},
}

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PARTIAL = 2


def script_text(name: str) -> bytes:
    """The rc.d script ``name`` as shipped in the package."""
    if name not in SCRIPTS:
        raise KeyError(f"no rc.d script named {name!r}")
    return resources.files("fpvm.guest").joinpath("files", "rc.d", name).read_bytes()


_HEADER = re.compile(r"^#\s*(PROVIDE|REQUIRE|BEFORE|KEYWORD):(.*)$")


def rcorder_header(text: str | bytes) -> dict[str, list[str]]:
    """The rcorder(8) keywords of a script: ``{"PROVIDE": [...], "REQUIRE": [...], ...}``.

    rcorder reads ``# PROVIDE:``, ``# REQUIRE:``, ``# BEFORE:`` and ``# KEYWORD:`` lines (each may
    repeat; words are separated by blanks).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out: dict[str, list[str]] = {"PROVIDE": [], "REQUIRE": [], "BEFORE": [], "KEYWORD": []}
    for line in text.split("\n"):
        m = _HEADER.match(line)
        if m:
            out[m.group(1)].extend(m.group(2).split())
    return out


# -- fpvm guest boot ----------------------------------------------------------------------------------
def add_boot_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fpvm guest boot`` (guest-core's cli.py registers the parser)."""
    parser.add_argument("--root", default="/", help="target root (default /)")
    parser.add_argument("--firstboot", action="store_true", help="provision even if done before")
    parser.add_argument("--config", metavar="FILE", help="Ignition config file (instead of fw_cfg)")
    parser.add_argument("--record", metavar="FILE", help="record FreeBSD commands instead of running them")
    parser.add_argument(
        "--qemufwcfg-mount",
        default="/var/run/qemufwcfg",
        metavar="DIR",
        help="where a qemufwcfg file system may be mounted (default /var/run/qemufwcfg)",
    )
    parser.add_argument("--no-fwcfg", action="store_true", help="do not look for a fw_cfg device")


def boot_main(args: argparse.Namespace) -> int:
    """Handler of ``fpvm guest boot``."""
    from fpvm.guest.configsource import default_fwcfg_opener

    return boot(
        args.root or "/",
        firstboot=args.firstboot,
        config_file=args.config,
        record=args.record,
        qemufwcfg_mount=args.qemufwcfg_mount,
        fwcfg_opener=None if args.no_fwcfg else default_fwcfg_opener,
    )


def _apply_all(ctx: ApplyContext, actions: list[Action]) -> list[str]:
    """Apply each action; failures are logged and returned, the others still run."""
    from fpvm.guest.runner import CommandError

    failed: list[str] = []
    for action in actions:
        try:
            action.apply(ctx)
        except (OSError, ValueError, RuntimeError, CommandError) as exc:
            ctx.log.error(f"{action.describe()}: {exc}")
            failed.append(f"{action.describe()}: {exc}")
    return failed


def boot(
    root: str = "/",
    *,
    firstboot: bool = False,
    config_file: str | None = None,
    record: str | None = None,
    qemufwcfg_mount: str | None = "/var/run/qemufwcfg",
    fwcfg_opener: Callable[[], FwCfgDevice] | None = None,
    probe: Probe | None = None,
    echo: TextIO | None = sys.stderr,
) -> int:
    """One boot's work on ``root`` (see the module docstring). Returns the exit status.

    0: done; 1: no usable config and never provisioned, or the config is invalid; 2: some actions
    failed (the others were applied).
    """
    from fpvm.guest import apisocket, configsource, mounts, proxy
    from fpvm.guest.context import make_context
    from fpvm.guest.provision import EXIT_INVALID, load_config, provision
    from fpvm.ignition.resources import Budget

    budget = Budget()  # one fetching deadline for the whole boot
    ctx = make_context(root, record=record, echo=echo)
    status = EXIT_OK
    try:
        sources = configsource.find_sources(
            config_file=config_file,
            fwcfg_opener=fwcfg_opener,
            qemufwcfg_mount=qemufwcfg_mount,
            probe=probe or configsource.Probe.from_runner(ctx.root, ctx.runner),
            log=ctx.log,
        )
        provisioned = ctx.state.get("provisioned") is not None
        config: Config | None = None
        if sources.config is not None:
            config, problems = load_config(sources.config, budget)
            if config is None:
                for p in problems:
                    ctx.log.error(f"{sources.config_origin}: {p}")
                if not provisioned:
                    return EXIT_FAILED
        elif not provisioned:
            ctx.log.error(f"not provisioned yet and {sources.summary()}")
            status = EXIT_FAILED

        first = config is not None and (firstboot or not provisioned)
        if first:
            assert sources.config is not None
            outcome = provision(root, sources.config, ctx=ctx, ready=False, config=config, budget=budget)
            if outcome.status == EXIT_INVALID:
                for p in outcome.problems:
                    ctx.log.error(p)
                return EXIT_FAILED
            if outcome.failed:
                status = EXIT_PARTIAL
        elif config is not None:
            from fpvm.fsutil import sha256_hex  # not hashlib: it loads OpenSSL at every boot

            if ctx.state.get("config_sha256") != sha256_hex(sources.config or b""):
                ctx.log.info("the config differs from the one provisioned; not re-applied (first boot only)")

        # Every boot.
        # The podman users, from the config, else as remembered from it (a boot that gets no config).
        if config is not None:
            users = apisocket.podman_users(config)
            ctx.state.set("podman_users", [[n, u] for n, u, _ in users])
        else:
            saved = ctx.state.get("podman_users", [])
            users = [(str(n), u if isinstance(u, int) else None, "") for n, u in saved]
        actions: list[Action] = apisocket.plan_api_socket(users)
        env: dict[str, str] | None = None
        if sources.environment is not None:
            try:
                env = proxy.decode_environment_entry(sources.environment)
            except proxy.EnvironmentEntryError as exc:
                ctx.log.warn(str(exc))
        elif sources.config_origin is not None and not sources.config_origin.startswith("--config"):
            env = {}  # qemu without the entry: the host has no proxy settings (any more)
        # podman 5.x's certificate variables (Ignition files, not the fw_cfg entry): remembered from the
        # config, merged below the entry's own values; without an entry decision, with the 5.x proxy
        # variables the daemon-reload shim last saw.
        if config is not None:
            from fpvm.guest.plan import PlanOptions, resource_bytes

            inline = PlanOptions(fetch_remote=False)
            cert_env = proxy.cert_env_from_config(config, lambda r: resource_bytes(r, inline))
            ctx.state.set(proxy.CERT_STATE_KEY, cert_env)
        else:
            cert_env = proxy.cert_env_from_state(ctx.state.get(proxy.CERT_STATE_KEY))
        if env is None and cert_env:
            env = proxy.read_environment_d(ctx.root)
        if env is not None:
            env = {**cert_env, **env}
            actions.append(proxy.ProxyEnvAction(env, source=sources.environment_origin or ""))
        if not first:
            try:
                actions.extend(mounts.plan_mounts(config, ctx.root))
            except ValueError as exc:
                ctx.log.error(f"mounts: {exc}")
                status = max(status, EXIT_PARTIAL)
        if _apply_all(ctx, actions):
            status = max(status, EXIT_PARTIAL)
        ctx.state.save(ctx.root)
        return status
    finally:
        try:
            ctx.log.flush(ctx.root)
        except OSError as exc:
            print(f"fpvm: cannot write the log: {printable(str(exc), MAX_SHOWN)}", file=sys.stderr)

