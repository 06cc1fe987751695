"""The boot step reads its config once: one parse, one fetch of each remote reference per boot.

A real HTTP server on 127.0.0.1 serves a child config that the parent merges; it counts the requests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fpvm.guest import rcd
from fpvm.guest.configsource import Probe

CHILD = json.dumps(
    {
        "ignition": {"version": "3.0.0"},
        "storage": {"files": [{"path": "/etc/from-child", "contents": {"source": "data:,merged%0A"}}]},
    }
).encode()


class ChildServer:
    """Serves ``/child.ign`` and counts the requests for it."""

    def __init__(self) -> None:
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                self.send_response(200 if self.path == "/child.ign" else 404)
                self.send_header("Content-Length", str(len(CHILD)))
                self.end_headers()
                self.wfile.write(CHILD)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/child.ign"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[ChildServer]:
    srv = ChildServer()
    try:
        yield srv
    finally:
        srv.close()


def _boot(root: Path, config: Path, record: Path) -> int:
    return rcd.boot(
        str(root),
        config_file=str(config),
        record=str(record),
        qemufwcfg_mount=None,
        fwcfg_opener=None,
        probe=Probe(None, lambda argv: None),
        echo=None,
    )


def test_one_fetch_per_boot(tmp_path: Path, server: ChildServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "root"
    root.mkdir()
    parent = {
        "ignition": {"version": "3.2.0", "config": {"merge": [{"source": server.url}]}},
        "storage": {"files": [{"path": "/etc/from-parent", "contents": {"source": "data:,parent%0A"}}]},
    }
    config = tmp_path / "parent.ign"
    config.write_text(json.dumps(parent))

    # First boot: the config is loaded, then provisioned from that same load.
    assert _boot(root, config, tmp_path / "rec.jsonl") == 0
    assert (root / "etc/from-child").read_bytes() == b"merged\n"
    assert (root / "etc/from-parent").read_bytes() == b"parent\n"
    assert server.hits == 1

    # A later boot loads it again (per-boot steps need the users), once.
    assert _boot(root, config, tmp_path / "rec.jsonl") == 0
    assert server.hits == 2
