"""A minimal QMP client: enough to ask a VM its status and to power it off.

QMP is a stream of JSON objects, not lines (podman sends commands without a newline); the reader
therefore decodes objects from a buffer with ``raw_decode`` and skips asynchronous events.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from fpvm.machine.errors import MachineError


class QMPError(MachineError):
    """QMP could not be reached or a command failed."""


class QMP:
    def __init__(self, path: Path | str, timeout: float = 5.0) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.buf = ""
        self.decoder = json.JSONDecoder()
        try:
            self.sock.connect(self.path)
            greeting = self._read()
            if "QMP" not in greeting:
                raise QMPError(f"{self.path}: not a QMP socket (greeting {greeting!r})")
            self.execute("qmp_capabilities")
        except OSError as exc:
            self.sock.close()
            raise QMPError(f"cannot talk to QMP at {self.path}: {exc}") from None
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self) -> QMP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _read(self) -> dict[str, Any]:
        while True:
            text = self.buf.lstrip()
            if text:
                try:
                    obj, end = self.decoder.raw_decode(text)
                except ValueError:
                    pass
                else:
                    self.buf = text[end:]
                    if not isinstance(obj, dict):
                        raise QMPError(f"{self.path}: unexpected QMP message {obj!r}")
                    return obj
            data = self.sock.recv(65536)
            if not data:
                raise QMPError(f"{self.path}: QMP connection closed")
            self.buf += data.decode("utf-8", "replace")

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run ``command``; return its ``return`` value. Events that arrive meanwhile are skipped."""
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\r\n")
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                err = reply["error"]
                raise QMPError(f"QMP {command}: {err.get('class')}: {err.get('desc')}")

    def hmp(self, command_line: str) -> str:
        """A human-monitor command (``info qtree``...) through QMP."""
        return str(self.execute("human-monitor-command", {"command-line": command_line}))
