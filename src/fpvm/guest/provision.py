"""Apply an Ignition config to a root: parse, plan, apply, report.

``provision(root, data, ...)`` is the whole job for ``fpvm guest provision`` and for the boot step. An
invalid config (or plan) means exit status 1 and *nothing* applied; an action that fails is logged and
the others still run (a half-provisioned VM that podman can ssh into beats one that never sends
Ready), and the status is 2. The state, this run's report and the log are saved under the root.

Durability: until a run has succeeded (no "provisioned" in the state), files are written atomically
but not fsynced one by one; ``RootFS.sync_deferred`` makes all of them durable (one sync(2), then an
fsync(2) per file and per directory) before the state that says "provisioned" is saved. A crash before
that point is answered by the next boot provisioning again. Later runs fsync each write as it happens.

Applying is idempotent: every action compares before it writes, so a second run changes no file and
records only commands that are still needed. The state, report and log are the agent's own records and
are excluded from that promise.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from fpvm.fsutil import read_regular, sha256_hex
from fpvm.guest.context import REPORT_FILE, ApplyContext, make_context
from fpvm.guest.runner import CommandError, Runner
from fpvm.safetext import MAX_SHOWN, printable

if TYPE_CHECKING:
    from fpvm.ignition.model import Config
    from fpvm.ignition.resources import Budget

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_PARTIAL = 2
SUMMARY_LINES = 40  # changed actions listed on stdout; the report has them all


class Outcome:
    """What a provision did; ``status`` is the exit status."""

    def __init__(self, status: int, total: int = 0, problems: list[str] | None = None) -> None:
        self.status = status
        self.total = total
        self.changed: list[str] = []
        self.skipped: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.commands: list[list[str]] = []
        self.problems = list(problems or [])  # why the config is invalid
        self.warnings = 0
        self.warning_lines: list[str] = []

    def summary(self, root: str, record: str | None) -> str:
        """The lines the boot step and ``fpvm guest provision`` print: every config-made string escaped."""

        def esc(text: str) -> str:
            return printable(text, MAX_SHOWN)

        if self.status == EXIT_INVALID:
            problems = "\n".join(f"  {esc(p)}" for p in self.problems)
            return "fpvm: invalid config, nothing applied:\n" + problems
        verb = "recorded to " + esc(record) if record else "run"
        lines = [
            f"fpvm: provisioned {esc(root)}: {self.total} actions, {len(self.changed)} changed, "
            f"{len(self.skipped)} skipped (Linux-only), {len(self.failed)} failed, {self.warnings} warnings; "
            f"{len(self.commands)} commands {verb}"
        ]
        lines += [f"  changed: {esc(c)}" for c in self.changed[:SUMMARY_LINES]]
        if len(self.changed) > SUMMARY_LINES:
            lines.append(f"  ... and {len(self.changed) - SUMMARY_LINES} more (see {REPORT_FILE})")
        lines += [f"  warning: {esc(w)}" for w in self.warning_lines[:SUMMARY_LINES]]
        lines += [f"  FAILED: {esc(d)}: {esc(e)}" for d, e in self.failed]
        return "\n".join(lines)


def load_config(data: bytes, budget: Budget | None = None) -> tuple[Config | None, list[str]]:
    """(config, []) or (None, problems), after following ``ignition.config.replace``/``merge``.

    References are resolved here, before planning, because upstream Ignition applies the rendered
    config: a child config's users and files are part of what the guest must provision. A reference
    that cannot be fetched or verified makes the whole config invalid, as it does upstream. The
    resolver (and with it http/ssl) is imported only when a config has references: podman's never do.
    ``budget`` (``fpvm.ignition.resources.Budget``) is the boot's one fetching deadline and reference
    count, shared with the plan's fetches.
    """
    from fpvm.ignition import IgnitionError, parse

    try:
        config = parse(data)
        refs = config.ignition.config
        if refs.replace.source is not None or any(r.source is not None for r in refs.merge):
            from fpvm.ignition.resolve import resolve

            config = resolve(config, budget=budget)
        return config, []
    except IgnitionError as exc:
        errors = exc.report.errors
        if errors:
            return None, [f"{e.path}: {e.message}" for e in errors]
        return None, [str(exc)]


def provision(
    root: str,
    data: bytes,
    *,
    record: str | None = None,
    runner: Runner | None = None,
    echo: TextIO | None = None,
    ready: bool = False,
    ctx: ApplyContext | None = None,
    config: Config | None = None,
    budget: Budget | None = None,
) -> Outcome:
    """Provision ``root`` from the Ignition config bytes ``data``.

    ``config`` is ``data`` already loaded (``load_config``: parsed, references followed) when the caller
    has it: the boot step loads the config once, and a remote reference is fetched once per boot.
    ``budget``: the boot's fetching budget (one deadline for references and contents together).
    """
    from fpvm.guest.plan import PlanError, PlanOptions, build_plan
    from fpvm.ignition.resources import Budget

    budget = budget or Budget()
    if config is None:
        config, problems = load_config(data, budget)
        if config is None:
            return Outcome(EXIT_INVALID, problems=problems)
    if ctx is None:
        ctx = make_context(root, record=record, echo=echo, runner=runner)
    try:
        actions = build_plan(config, PlanOptions(root=ctx.root, budget=budget))
    except PlanError as exc:
        return Outcome(EXIT_INVALID, problems=[f"{p}: {m}" for p, m in exc.problems])
    except ValueError as exc:  # a planning module's own validation
        return Outcome(EXIT_INVALID, problems=[str(exc)])
    out = Outcome(EXIT_OK, total=len(actions))
    report: list[dict[str, Any]] = []
    started = time.time()
    if ctx.state.get("provisioned") is None:
        # Until a run has succeeded, writes are made durable together at the end (sync_deferred,
        # before the state records "provisioned"): a crash before that leaves the state without it,
        # and the next boot provisions again, rewriting any file whose bytes did not reach the disk.
        ctx.root.defer_sync()
    try:
        for action in actions:
            entry = action.to_json()
            report.append(entry)
            try:
                changed = action.apply(ctx)
            except (OSError, ValueError, RuntimeError, CommandError) as exc:
                ctx.log.error(f"{action.describe()}: {exc}")
                out.failed.append((action.describe(), str(exc)))
                entry["error"] = str(exc)
                continue
            entry["changed"] = changed
            if action.disposition == "ignore":
                out.skipped.append(action.describe())
            elif changed:
                out.changed.append(action.describe())
        ctx.root.sync_deferred()
        if ready:
            _ready(ctx)
        digest = sha256_hex(data)
        ctx.state.set("config_sha256", digest)  # saved only if it changed (State.save compares)
        if ctx.state.get("provisioned") is None and not out.failed:
            # Only a complete run counts: the boot step provisions again until one succeeds.
            ctx.state.set("provisioned", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)))
        body = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 3),
            "config_sha256": digest,
            "recorded": ctx.recording,
            "commands": ctx.commands,
            "actions": report,
        }
        try:
            ctx.state.save(ctx.root)
            ctx.root.write(
                REPORT_FILE, (json.dumps(body, separators=(",", ":")) + "\n").encode(), 0o600, 0, 0
            )
        except (OSError, ValueError) as exc:
            ctx.log.error(f"cannot save the state and report: {exc}")
            out.failed.append(("save state and report", str(exc)))
    finally:
        try:
            ctx.root.sync_deferred()  # no-op unless an exception skipped the call above
        except OSError as exc:
            ctx.log.error(f"cannot sync the written files: {exc}")
        out.warning_lines = [line.split(" WARN ", 1)[1] for line in ctx.log.lines if " WARN " in line]
        ctx.log.info(
            f"provision: {len(actions)} actions, {len(out.changed)} changed, {len(out.failed)} failed"
        )
        try:
            ctx.log.flush(ctx.root)
        except OSError as exc:
            print(f"fpvm: cannot write the log: {printable(str(exc), MAX_SHOWN)}", file=sys.stderr)
    out.commands = list(ctx.commands)
    out.warnings = ctx.log.warnings
    if out.failed:
        out.status = EXIT_PARTIAL
    return out


def _ready(ctx: ApplyContext) -> None:
    """Tell the host the machine is ready (``fpvm.guest.ready``); never fatal.

    Only on the live system: a staged root has no virtio-serial port and no sshd to wait for.
    """
    if not ctx.root.is_live:
        ctx.log.info("ready: not signalled for a staged root")
        return
    from fpvm.guest.ready import signal_ready

    try:
        signal_ready(log=ctx.log)
    except (OSError, RuntimeError, ValueError) as exc:
        ctx.log.warn(f"ready: {exc}")


def main(root: str, config_path: str, record: str | None, no_ready: bool, out: TextIO) -> int:
    """``fpvm guest provision``."""
    from fpvm.guest.configsource import MAX_CONFIG_BYTES

    try:
        data = read_regular(config_path, MAX_CONFIG_BYTES, follow=True)  # no FIFO, no 1 TB file
    except OSError as exc:
        print(f"fpvm: cannot read {config_path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    if not os.path.isdir(root):
        print(f"fpvm: the root {root} is not a directory", file=sys.stderr)
        return EXIT_INVALID
    result = provision(root, data, record=record, echo=None, ready=not no_ready)
    print(result.summary(root, record), file=out if result.status != EXIT_INVALID else sys.stderr)
    return result.status
