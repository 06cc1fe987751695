"""What an action applies to: the target root, the command runner, the log and the agent's state."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from fpvm.fsutil import append_regular
from fpvm.guest.rootfs import RootFS
from fpvm.guest.runner import RecordingRunner, Result, Runner, SubprocessRunner
from fpvm.safetext import MAX_SHOWN, printable

if TYPE_CHECKING:
    from fpvm.guest.accountdb import AccountDB

STATE_DIR = "/var/db/fpvm"
STATE_FILE = "/var/db/fpvm/state.json"
REPORT_FILE = "/var/db/fpvm/last-boot.json"
LOG_FILE = "/var/log/fpvm.log"


class Log:
    """Lines for /var/log/fpvm.log (under the root), echoed to ``echo`` when given.

    Kept in memory and appended once at the end: the log file is the agent's own, and a half-written
    provision still flushes what it did (``flush`` is called from a ``finally``).
    """

    def __init__(self, echo: TextIO | None = None) -> None:
        self.lines: list[str] = []
        self.echo = echo
        self.warnings = 0

    def _add(self, level: str, msg: str) -> None:
        # One entry, one line, no terminal control: config-made strings (paths, names) are escaped.
        msg = printable(msg, MAX_SHOWN)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.lines.append(f"{stamp} {level} {msg}")
        if self.echo is not None:
            print(f"fpvm: {level.lower()}: {msg}" if level != "INFO" else f"fpvm: {msg}", file=self.echo)

    def info(self, msg: str) -> None:
        self._add("INFO", msg)

    def warn(self, msg: str) -> None:
        self.warnings += 1
        self._add("WARN", msg)

    def error(self, msg: str) -> None:
        self._add("ERROR", msg)

    def flush(self, root: RootFS) -> None:
        """Append the collected lines to the root's log file (mode 0640 root:wheel); OSError if it cannot."""
        if not self.lines:
            return
        # An append-only log is appended to, not rewritten; O_NOFOLLOW keeps a planted symlink at the
        # log's path from sending the lines outside the root, O_NONBLOCK and a type check a FIFO there
        # from hanging the boot (fsutil.append_regular).
        data = ("\n".join(self.lines) + "\n").encode("utf-8", "replace")
        try:
            root.makeparents(LOG_FILE)
            append_regular(root.host(LOG_FILE), data, 0o640, single_link=not root.is_live)
            root.set_attrs(LOG_FILE, 0o640, 0, 0)
        except ValueError as exc:  # an unsafe path (planted link), a refused chmod: callers handle OSError
            raise OSError(str(exc)) from exc
        self.lines.clear()


class State:
    """The agent's memory between boots: /var/db/fpvm/state.json (written only when it changes)."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = dict(data or {})
        self._saved = json.dumps(self.data, sort_keys=True)

    @classmethod
    def load(cls, root: RootFS) -> State:
        try:
            raw = root.read_bytes_nofollow(STATE_FILE)  # the agent's own file: a link there is not ours
            data = json.loads(raw) if raw is not None else {}
        except ValueError:  # an unsafe parent (planted link) or bad JSON: start afresh, saving replaces it
            return cls()
        return cls(data if isinstance(data, dict) else {})

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def save(self, root: RootFS) -> bool:
        compact = json.dumps(self.data, sort_keys=True)
        if compact == self._saved and root.exists(STATE_FILE):
            return False
        root.makedirs(STATE_DIR, 0o700)
        root.write(STATE_FILE, json.dumps(self.data, sort_keys=True, indent=2).encode() + b"\n", 0o600)
        self._saved = compact
        return True


class ApplyContext:
    """Everything ``Action.apply`` may use. Built by ``make_context``."""

    def __init__(self, root: RootFS, runner: Runner, log: Log, state: State) -> None:
        self.root = root
        self.runner = runner
        self.log = log
        self.state = state
        self._accounts: AccountDB | None = None
        self.commands: list[list[str]] = []  # what this run ran or recorded, in order

    @property
    def recording(self) -> bool:
        """True when commands are only recorded: the agent then stages their effects itself."""
        return self.runner.recording

    @property
    def accounts(self) -> AccountDB:
        """The root's account database, read once and kept in step by the account actions.

        The first time the agent ever reads it, the names of the base system's accounts are
        remembered in the state (``passwd`` protects them).
        """
        if self._accounts is None:
            # The config, the plan and the accounts live until the agent exits: reading creates no
            # cycles, and frozen afterwards they are out of the collector's sight, so a config of
            # 100 000 users is not rescanned at every full collection.
            import gc

            from fpvm.guest.accountdb import BASE_ACCOUNTS_KEY, AccountDB, system_account_names

            enabled = gc.isenabled()
            gc.disable()
            try:
                self._accounts = AccountDB.load(self.root)
            finally:
                if enabled:
                    gc.enable()
            gc.freeze()
            if not isinstance(self.state.get(BASE_ACCOUNTS_KEY), list):
                self.state.set(BASE_ACCOUNTS_KEY, system_account_names(self._accounts))
        return self._accounts

    def forget_accounts(self) -> None:
        """Read the files again at the next use (after a command that changed them behind our back)."""
        self.commit_accounts()
        self._accounts = None

    def commit_accounts(self) -> None:
        """Write the staged account files once (recording only: on a live system pw wrote them)."""
        acc = self._accounts
        if acc is not None and acc.dirty:
            if self.recording:
                acc.save(self.root)
            acc.dirty = False

    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True) -> Result:
        self.log.info("run: " + " ".join(argv))
        self.commands.append(list(argv))
        return self.runner.run(argv, input=input, check=check)


def make_context(
    root: str = "/",
    record: str | None = None,
    echo: TextIO | None = None,
    runner: Runner | None = None,
) -> ApplyContext:
    """A context for ``root``: commands recorded to ``record`` if given, else run for real."""
    fs = RootFS(root)
    if runner is None:
        runner = RecordingRunner(record) if record is not None else SubprocessRunner()
    return ApplyContext(fs, runner, Log(echo), State.load(fs))

