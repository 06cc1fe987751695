"""One way to run FreeBSD commands: for real, or recorded.

Everything the agent asks of FreeBSD (pw, sysrc-like changes, service, mount, kldload ...) goes
through a Runner so that it can be tested off FreeBSD: ``RecordingRunner`` appends each command to a
file as one JSON line ``{"argv": [...]}`` (plus ``"input"`` when the command reads stdin) and
pretends it succeeded. Tests then check the argv against the documented syntax, and
``docs/freebsd-checklist.md`` lists what still needs a real run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence


class Result:
    """What a command returned (a recorded command "returns" 0 and no output)."""

    __slots__ = ("returncode", "stderr", "stdout")

    def __init__(self, returncode: int, stdout: bytes = b"", stderr: bytes = b"") -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandError(RuntimeError):
    """A command that had to succeed did not."""

    def __init__(self, argv: Sequence[str], result: Result) -> None:
        msg = result.stderr.decode("utf-8", "replace").strip() or f"exit status {result.returncode}"
        super().__init__(f"{' '.join(argv)}: {msg}")
        self.argv = list(argv)
        self.result = result


class Runner:
    """Base class: runs nothing. ``recording`` tells callers that commands have no real effect."""

    recording: bool = False

    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True) -> Result:
        raise NotImplementedError


class SubprocessRunner(Runner):
    """Run commands for real; a failing command raises CommandError when ``check``."""

    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True) -> Result:
        import subprocess  # not on the boot path when nothing runs

        try:
            proc = subprocess.run(list(argv), input=input, capture_output=True, check=False)
        except FileNotFoundError:
            result = Result(127, b"", f"{argv[0]}: command not found".encode())
        else:
            result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and not result.ok:
            raise CommandError(argv, result)
        return result


class RecordingRunner(Runner):
    """Record commands as JSON lines in ``path`` (or only in memory when ``path`` is None)."""

    recording = True

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = path
        self.commands: list[list[str]] = []

    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True) -> Result:
        entry: dict[str, object] = {"argv": list(argv)}
        if input is not None:
            entry["input"] = input.decode("utf-8", "replace")
        self.commands.append(list(argv))
        if self.path is not None:
            line = json.dumps(entry, separators=(", ", ": ")) + "\n"
            # Append-only log of commands: a plain append is what a reader of the record wants.
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
        return Result(0)


def read_record(path: str | os.PathLike[str]) -> list[list[str]]:
    """The argv lists recorded in ``path`` (tests and `fpvm guest shim --record`)."""
    out: list[list[str]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append([str(a) for a in json.loads(line)["argv"]])
    return out
