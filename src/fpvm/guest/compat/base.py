"""What every linux-compat command gets: the target root, the command runner and a log.

Messages go to stderr (podman shows them when a command fails) and to ``/var/log/fpvm.log`` under
the root, so that `fpvm podman-machine doctor` and a human can see what podman asked for. A recording
run on the live root (``--record`` with ``--root /``, i.e. a dry run on a host) writes no log file.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from fpvm.fsutil import append_regular
from fpvm.guest.rootfs import RootFS
from fpvm.guest.runner import RecordingRunner, Result, Runner, SubprocessRunner
from fpvm.safetext import MAX_SHOWN, printable

TYPE_CHECKING = False  # not typing's: a shim does not need typing at run time (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TextIO

LOG_FILE = "/var/log/fpvm.log"


class Shim:
    """One invocation of a linux-compat command.

    A plain class rather than a dataclass: every podman ssh command starts a shim, and importing
    ``dataclasses`` (with ``inspect``) would be a large part of its start-up.
    """

    def __init__(
        self,
        name: str,
        root: RootFS,
        runner: Runner,
        err: TextIO | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.name = name
        self.root = root
        self.runner = runner
        self.err: TextIO = sys.stderr if err is None else err
        self.out: TextIO = sys.stdout if out is None else out
        self.lines: list[str] = []

    @classmethod
    def make(cls, name: str, root: str = "/", record: str | None = None) -> Shim:
        runner = RecordingRunner(record) if record is not None else SubprocessRunner()
        return cls(name, RootFS(root), runner)

    def _log(self, level: str, msg: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.lines.append(f"{stamp} {level} linux-compat {self.name}: {printable(msg, MAX_SHOWN)}")

    def _show(self, msg: str) -> None:
        print(f"{self.name}: {printable(msg, MAX_SHOWN)}", file=self.err)

    def info(self, msg: str) -> None:
        """A log line only (success paths stay quiet for podman)."""
        self._log("INFO", msg)

    def note(self, msg: str) -> None:
        """A log line that is also shown: something was asked that FreeBSD does not do."""
        self._log("INFO", msg)
        self._show(msg)

    def error(self, msg: str) -> int:
        """Log and show an error; returns the exit status 1 for ``return shim.error(...)``."""
        self._log("ERROR", msg)
        self._show(msg)
        return 1

    def run(self, argv: Sequence[str], *, check: bool = False, input: bytes | None = None) -> Result:
        self.info("run: " + " ".join(argv))
        return self.runner.run(argv, check=check, input=input)

    def passthrough(self, argv: Sequence[str]) -> int:
        """Run a FreeBSD command as if it had been called directly: its output, its exit status."""
        result = self.run(argv)
        self.out.write(result.stdout.decode("utf-8", "replace"))
        self.err.write(result.stderr.decode("utf-8", "replace"))
        return result.returncode

    def flush(self) -> None:
        """Append the collected lines to the root's log; never fails the command over the log."""
        if not self.lines or (self.runner.recording and self.root.is_live):
            return
        try:
            self.root.makeparents(LOG_FILE)
            # O_NOFOLLOW/O_NONBLOCK and a type check: a link, FIFO or device there is not written to.
            data = ("\n".join(self.lines) + "\n").encode("utf-8", "replace")
            append_regular(self.root.host(LOG_FILE), data, 0o640, single_link=not self.root.is_live)
        except (OSError, ValueError):
            pass
        self.lines.clear()


def os_error_text(exc: OSError) -> str:
    """One short line for an OSError: its message and the (shortened) file name, not a traceback."""
    what = exc.strerror or str(exc) or type(exc).__name__
    name = exc.filename
    if name is None:
        return what
    return f"{printable(str(name), 200)}: {what}"


def run_guarded(shim: Shim, run: Callable[[Shim, list[str]], int], args: list[str]) -> int:
    """``run(shim, args)`` with every OS error (and refused path) turned into one line and exit 1.

    The shims run as root for podman; no input (a 100 000-byte path, a FIFO, a device) may end in a
    traceback. Usage errors stay exit 2 (the caller's), everything the system refuses is exit 1.
    """
    try:
        return run(shim, args)
    except OSError as exc:
        return shim.error(os_error_text(exc))
    except (ValueError, UnicodeError) as exc:  # UnsafePathError and friends: a refused path
        return shim.error(str(exc))
    except RecursionError:
        return shim.error("input too deeply nested")
    except MemoryError:
        return shim.error("input too large")
