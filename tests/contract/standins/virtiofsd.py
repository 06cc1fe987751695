"""A stand-in for the real virtiofsd: what podman 5.2+ starts per ``-v`` folder before QEMU.

podman runs ``virtiofsd --sandbox none --socket-path SOCK --shared-dir . --seccomp=none`` in the
volume's source folder, waits until SOCK exists, and gives QEMU a vhost-user-fs device on it. Like
virtiofsd, this listens on SOCK, serves one QEMU connection and exits when QEMU closes it (or on
SIGTERM); it serves no file system (the stand-in QEMU sends nothing). Each start is appended to the
harness's ``virtiofsd_args`` file as JSON ``{"argv", "cwd"}``.

Standard library only. Usage: ``python3 virtiofsd.py HARNESS_JSON VIRTIOFSD_ARGS...``
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any


def socket_path(args: list[str]) -> str:
    for i, a in enumerate(args):
        if a == "--socket-path" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--socket-path="):
            return a.split("=", 1)[1]
    raise SystemExit("virtiofsd: --socket-path is required")


def main() -> int:
    cfg: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    args = sys.argv[2:]
    with open(cfg["virtiofsd_args"], "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"argv": args, "cwd": os.getcwd()}) + "\n")
    os.makedirs(cfg["pids"], exist_ok=True)
    Path(cfg["pids"], f"virtiofsd-{os.getpid()}").write_text(f"{os.getpid()}\n", encoding="utf-8")
    sock = socket_path(args)

    def stop(*_: object) -> None:
        with contextlib.suppress(OSError):
            os.unlink(sock)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock)
    srv.listen(1)
    conn, _ = srv.accept()
    srv.close()
    with conn:
        while conn.recv(65536):
            pass
    stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
