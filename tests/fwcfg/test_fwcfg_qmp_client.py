"""The QMP client's behaviour on sockets that are not a free QMP monitor (real QEMU: test_fwcfg_qemu.py)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from fpvm.fwcfg import FwCfgError
from fpvm.fwcfg.qmp import QmpTransport


def _serve_once(path: Path, greeting: bytes | None) -> threading.Thread:
    """A unix socket that sends ``greeting`` (or nothing) to its one client, then waits for it to leave."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        with server:
            client, _ = server.accept()
            with client:
                if greeting is not None:
                    client.sendall(greeting)
                client.recv(1024)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("greeting", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "not JSON"),
        (b'{"hello": 1}\r\n', "is not a QMP socket"),
        (None, "no answer within 0.5 s"),
    ],
)
def test_qmp_transport_rejects_sockets_that_are_not_a_free_qmp_monitor(
    tmp_path: Path, greeting: bytes | None, message: str
) -> None:
    thread = _serve_once(tmp_path / "s.sock", greeting)
    with pytest.raises(FwCfgError, match=message):
        QmpTransport(str(tmp_path / "s.sock"), timeout=0.5)
    thread.join(timeout=5)
    assert not thread.is_alive()
