"""fw_cfg of a running x86 QEMU, read from the host through its QMP socket.

Why: to see exactly what a VM receives (podman's QEMU provider passes the Ignition config as
``-fw_cfg name=opt/com.coreos/config,file=…``) without logging into the guest, and to test the protocol
layer against QEMU's real device.

QMP has no port I/O command, so this goes through ``human-monitor-command`` with the HMP commands
``o /h 0x510 KEY`` (16-bit write to the selector port; the port is little-endian like everything on x86)
and ``i /b 0x511`` (8-bit read of the data port, answered as ``portb[0x0511] = 0x51``). Both forms were
checked on QEMU 7.2: ``o 0x510 KEY`` without ``/h`` is an 8-bit write, which QEMU treats as a (deprecated)
data write rather than a selection. ARM machines have no port I/O, hence x86 only.

One HMP command moves one byte. QEMU spends most of a millisecond per command whatever the client does,
so requests are pipelined in batches (fewer round trips, same QEMU cost): expect about 1.5 KB/s, fine for
configs and directory listings (see docs/fwcfg.md for the measured figures).

The monitor serves one client at a time: while this is connected, podman cannot use the same socket
(for ``podman machine stop``), and a guest reading fw_cfg at the same moment would see its cursor move.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from typing import Any

from fpvm.fwcfg.protocol import FwCfgError, NoDeviceError

SELECTOR_PORT = 0x510
DATA_PORT = 0x511
X86_ARCHES = frozenset({"i386", "x86_64"})
BATCH = 64
_PORT_ANSWER = re.compile(r"port[bwl]\[0x0*511\] = 0x([0-9a-fA-F]{1,2})\s*$")


class QmpClient:
    """A QMP client just big enough for capability negotiation, commands and HMP pass-through.

    Any QEMU will do (the host launcher uses it to power machines off); ``QmpTransport`` below adds
    the fw_cfg port I/O on top. Errors are ``FwCfgError`` (``NoDeviceError`` when nothing listens).
    """

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.description = f"QMP socket {path}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError as exc:
            self._sock.close()
            raise NoDeviceError(f"cannot connect to QMP socket {path}: {exc.strerror or exc}") from None
        self._file = self._sock.makefile("rwb")
        self._next_id = 0
        try:
            greeting = self._message()
            if "QMP" not in greeting:
                raise FwCfgError(f"{path} is not a QMP socket (greeting {greeting!r})")
            self._command("qmp_capabilities")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> QmpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one QMP command and return its ``return`` value (events meanwhile are skipped)."""
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        return self._batch([request])[0]

    def hmp(self, command_line: str) -> str:
        """One human-monitor command (``info qtree``...) and its text answer."""
        (answer,) = self._hmp_batch([command_line])
        return answer

    def _message(self) -> dict[str, Any]:
        try:
            line = self._file.readline()
        except TimeoutError:
            raise FwCfgError(
                f"{self.description}: no answer within {self._sock.gettimeout()} s "
                "(QEMU serves one monitor client at a time: is another one connected?)"
            ) from None
        except OSError as exc:
            raise FwCfgError(f"{self.description}: {exc}") from None
        if not line:
            raise FwCfgError(f"{self.description}: QEMU closed the connection")
        try:
            value = json.loads(line)
        except ValueError:
            raise FwCfgError(f"{self.description}: not JSON: {line[:80]!r}") from None
        if not isinstance(value, dict):
            raise FwCfgError(f"{self.description}: unexpected message {line[:80]!r}")
        return value

    def _send(self, requests: list[dict[str, Any]]) -> None:
        payload = b"".join(json.dumps(request).encode() + b"\n" for request in requests)
        try:
            self._file.write(payload)
            self._file.flush()
        except OSError as exc:
            raise FwCfgError(f"{self.description}: {exc}") from None

    def _replies(self, ids: list[int]) -> list[Any]:
        """Collect answers in order, skipping asynchronous events."""
        results: list[Any] = []
        for expected in ids:
            while True:
                message = self._message()
                if "event" in message:
                    continue
                break
            if message.get("id") != expected:
                raise FwCfgError(
                    f"{self.description}: answer {message.get('id')} out of order, wanted {expected}"
                )
            if "error" in message:
                error = message["error"]
                desc = error.get("desc", error) if isinstance(error, dict) else error
                raise FwCfgError(f"{self.description}: QEMU refused the command: {desc}")
            results.append(message.get("return"))
        return results

    def _batch(self, requests: list[dict[str, Any]]) -> list[Any]:
        ids = []
        for request in requests:
            request["id"] = self._next_id
            ids.append(self._next_id)
            self._next_id += 1
        self._send(requests)
        return self._replies(ids)

    def _command(self, name: str, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        return self._batch([request])[0]

    def _hmp_batch(self, lines: list[str]) -> list[str]:
        requests = [
            {"execute": "human-monitor-command", "arguments": {"command-line": line}} for line in lines
        ]
        answers = self._batch(requests)
        for line, answer in zip(lines, answers, strict=True):
            if not isinstance(answer, str):
                raise FwCfgError(f"{self.description}: HMP {line!r} answered {answer!r}")
        return answers

    def close(self) -> None:
        for closable in (getattr(self, "_file", None), self._sock):
            if closable is not None:
                with contextlib.suppress(OSError):
                    closable.close()


class QmpTransport(QmpClient):
    """fw_cfg registers of an x86 QEMU through HMP port I/O (see the module docstring)."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__(path, timeout)
        try:
            target = self._command("query-target")
            arch = target.get("arch") if isinstance(target, dict) else None
            if arch not in X86_ARCHES:
                raise FwCfgError(
                    "QMP transport needs an x86 machine (fw_cfg on I/O ports 0x510/0x511); "
                    f"this QEMU is {arch}"
                )
        except BaseException:
            self.close()
            raise

    def select(self, key: int) -> None:
        (answer,) = self._hmp_batch([f"o /h {SELECTOR_PORT:#x} {key:#x}"])
        if answer.strip():
            raise FwCfgError(f"{self.description}: selecting key {key:#06x} failed: {answer.strip()}")

    def read(self, count: int) -> bytes:
        out = bytearray()
        while len(out) < count:
            n = min(BATCH, count - len(out))
            for answer in self._hmp_batch([f"i /b {DATA_PORT:#x}"] * n):
                match = _PORT_ANSWER.match(answer.strip())
                if not match:
                    raise FwCfgError(f"{self.description}: unexpected answer to a port read: {answer!r}")
                out.append(int(match.group(1), 16))
        return bytes(out)
