"""The one way tests run the ``fpvm`` command: as a user does (a subprocess), or in the test's process.

``run_fpvm`` starts the real entry point, ``python -m fpvm``, with this checkout's ``src`` first on
PYTHONPATH: the exit status and the streams are what a shell would see. It is for the entry point
itself, for commands that write to the real file descriptors (``guest boot``'s log, ``debug fwcfg get``'s
bytes) and for anything that must not share the test's process state (environment, cwd, modules).

``fpvm_main`` calls ``fpvm.cli.main`` in the test's own process, so monkeypatches apply and it costs no
interpreter start. What the command prints is returned, and still reaches ``sys.stdout``/``sys.stderr``
as well, so a test that reads ``capsys`` after the call sees it there too.
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple, TextIO, overload

from fpvm import cli

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"


@overload
def run_fpvm(
    *args: str,
    env: Mapping[str, str] | None = ...,
    input: bytes | None = ...,
    text: Literal[True] = ...,
    timeout: float = ...,
    check: bool = ...,
) -> subprocess.CompletedProcess[str]: ...


@overload
def run_fpvm(
    *args: str,
    env: Mapping[str, str] | None = ...,
    input: bytes | None = ...,
    text: Literal[False],
    timeout: float = ...,
    check: bool = ...,
) -> subprocess.CompletedProcess[bytes]: ...


def run_fpvm(
    *args: str,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    text: bool = True,
    timeout: float = 300,
    check: bool = False,
) -> subprocess.CompletedProcess[Any]:
    """``fpvm ARGS`` through ``python -m fpvm`` in REPO, stdout and stderr captured (``str`` unless
    ``text=False``). ``env`` replaces the environment (default: the test's); ``input`` is fed to stdin,
    which is otherwise empty (never the terminal). ``timeout`` only guards against a hang.
    ``check=True`` fails the test with both streams when the exit status is not 0."""
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), full_env.get("PYTHONPATH")) if p)
    stdin: dict[str, Any] = {"stdin": subprocess.DEVNULL} if input is None else {}
    result = subprocess.run(
        [sys.executable, "-m", "fpvm", *args],
        env=full_env,
        cwd=REPO,
        input=input.decode() if text and input is not None else input,
        capture_output=True,
        text=text,
        timeout=timeout,
        check=False,
        **stdin,
    )
    if check and result.returncode != 0:
        out, err = (s if text else s.decode(errors="replace") for s in (result.stdout, result.stderr))
        raise AssertionError(f"fpvm {shlex.join(args)} exited {result.returncode}:\n{out}{err}")
    return result


class Ran(NamedTuple):
    """What ``fpvm_main`` saw: the exit status and everything printed on each stream."""

    status: int
    out: str
    err: str


class _Tee(io.StringIO):
    """Keeps the text written and passes it on to the stream that was there before. Bytes written to
    ``.buffer`` (a console relay, ``debug fwcfg get``) go to that stream's buffer only."""

    def __init__(self, through: TextIO) -> None:
        super().__init__()
        self.through = through

    def write(self, s: str) -> int:
        self.through.write(s)
        return super().write(s)

    def flush(self) -> None:
        self.through.flush()
        super().flush()

    @property
    def buffer(self) -> BinaryIO:
        self.through.flush()
        return self.through.buffer

    def fileno(self) -> int:
        return self.through.fileno()


def fpvm_main(*args: str) -> Ran:
    """``fpvm ARGS`` through ``fpvm.cli.main`` in this process; argparse's exits become the status."""
    out, err = _Tee(sys.stdout), _Tee(sys.stderr)
    with redirect_stdout(out), redirect_stderr(err):
        try:
            status = cli.main(list(args))
        except SystemExit as exc:  # usage errors, --help, --version
            status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return Ran(status, out.getvalue(), err.getvalue())
