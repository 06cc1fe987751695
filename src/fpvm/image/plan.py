"""A build is a flat list of named steps, planned first and run second (as mkosi's ``build_image``).

A step is either an external command (argv) or an in-process action (writing the overlay, verifying a
download, compressing). ``--dry-run`` prints the list: commands as shell lines, actions as ``# fpvm:``
comments saying what they would do, so a reviewer sees the whole build in order.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO


class BuildError(RuntimeError):
    """A build step failed; the message is meant for the user as it is."""


@dataclass(frozen=True)
class Step:
    """One step. ``unless``: a probe command; when it succeeds the step is already done.

    A step with both ``argv`` and ``action`` shows the command and runs it through the action (the
    builder VM: QEMU under a deadline with a status line).
    """

    title: str
    argv: tuple[str, ...] | None = None
    action: Callable[[], None] | None = field(default=None, compare=False)
    describe: str = ""
    unless: tuple[str, ...] | None = None
    quiet: bool = False  # shown in the plan, not announced while running (notes, guest-side steps)

    def render(self) -> str:
        """The dry-run line for this step."""
        if self.argv is not None:
            line = shlex.join(self.argv)
            if self.unless is not None:
                line = f"{shlex.join(self.unless)} || {line}"
            return line
        return f"# fpvm: {self.describe or self.title}"


def command(title: str, *argv: str, unless: Sequence[str] | None = None) -> Step:
    return Step(title, argv=tuple(argv), unless=tuple(unless) if unless is not None else None)


def action(title: str, func: Callable[[], None], describe: str, quiet: bool = False) -> Step:
    return Step(title, action=func, describe=describe, quiet=quiet)


def supervised(title: str, argv: Sequence[str], func: Callable[[], None]) -> Step:
    """A command that the build runs itself (deadline, progress) but shows as a plain command."""
    return Step(title, argv=tuple(argv), action=func)


def print_plan(steps: Sequence[Step], out: TextIO = sys.stdout) -> None:
    for step in steps:
        out.write(step.render() + "\n")


def run_steps(steps: Sequence[Step], log: Callable[[str], None] = lambda _m: None) -> None:
    """Run steps in order; the first failure raises BuildError naming the step."""
    for step in steps:
        if not step.quiet:
            log(step.title)
        if step.action is not None:
            step.action()
            continue
        assert step.argv is not None
        if step.unless is not None and _succeeds(step.unless):
            continue
        try:
            result = subprocess.run(step.argv, check=False)
        except FileNotFoundError:
            raise BuildError(f"{step.title}: {step.argv[0]} is not installed") from None
        if result.returncode != 0:
            raise BuildError(
                f"{step.title}: `{shlex.join(step.argv)}` exited with status {result.returncode}"
            )


def _succeeds(argv: Sequence[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0
    except FileNotFoundError:
        return False
