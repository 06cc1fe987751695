"""A stand-in for gvproxy: podman's network helper, reduced to what ``podman machine start`` needs.

podman 4.3.1 finds it through ``helper_binaries_dir`` and runs it with ``-listen-qemu unix://PATH
-pid-file PATH -ssh-port N -forward-sock ... -forward-dest ... -forward-user ... -forward-identity ...``.
It then connects to the ``-listen-qemu`` socket and hands that connection to qemu as its network
(fd 3); we accept and hold such connections. The guest's sshd (192.168.127.2:22 behind real gvproxy)
is a local sshd here: 127.0.0.1:N is forwarded to it. The API socket forward is not emulated.

Standard library only. Usage: ``python3 gvproxy.py HARNESS_JSON GVPROXY_ARGS...``
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any


def pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def forward(client: socket.socket, port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()


def main() -> int:
    cfg: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    argv = sys.argv[2:]
    opts = {argv[i]: argv[i + 1] for i in range(0, len(argv) - 1, 2) if argv[i].startswith("-")}
    with open(cfg["log"], "a", encoding="utf-8") as fh:
        fh.write(f"{time.strftime('%H:%M:%S')} gvproxy[{os.getpid()}] argv: {json.dumps(argv)}\n")
    with open(cfg["gvproxy_args"], "w", encoding="utf-8") as fh:
        json.dump(argv, fh)
    os.makedirs(cfg["pids"], exist_ok=True)
    with open(os.path.join(cfg["pids"], f"gvproxy-{os.getpid()}"), "w", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()}\n")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if "-pid-file" in opts:
        # as gvproxy writes it: no newline (podman 4.3.1 parses it with strconv.Atoi, untrimmed)
        with open(opts["-pid-file"], "w", encoding="utf-8") as fh:
            fh.write(str(os.getpid()))
    qemu_path = opts["-listen-qemu"].removeprefix("unix://")
    if os.path.exists(qemu_path):
        os.unlink(qemu_path)
    qemu_srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    qemu_srv.bind(qemu_path)
    qemu_srv.listen(4)
    ssh_srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ssh_srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ssh_srv.bind(("127.0.0.1", int(opts["-ssh-port"])))
    ssh_srv.listen(16)
    held: list[socket.socket] = []

    def accept_qemu() -> None:
        while True:
            conn, _ = qemu_srv.accept()
            held.append(conn)  # qemu's "network": kept open, never read

    def accept_ssh() -> None:
        while True:
            conn, _ = ssh_srv.accept()
            forward(conn, int(cfg["sshd_port"]))

    threading.Thread(target=accept_qemu, daemon=True).start()
    threading.Thread(target=accept_ssh, daemon=True).start()
    stop.wait()
    for path in (qemu_path, opts.get("-pid-file", "")):
        if path and os.path.exists(path):
            os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
