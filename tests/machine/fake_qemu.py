"""A stand-in for qemu-system-*: it reads a real fpvm/podman QEMU argv and serves what a host sees.

It serves QMP (a JSON stream: greeting, qmp_capabilities, query-status, system_powerdown, quit), the
ready socket (writes ``Ready\\n`` after FAKE_QEMU_READY_AFTER seconds, or never with ``never``), and the
serial console socket with its log file (boot text, then echoes what it receives). With
FAKE_QEMU_SSHD_CONFIG it runs OpenSSH's sshd on the forwarded port, as QEMU's hostfwd would reach the
guest's sshd. FAKE_QEMU_IGNORE_POWERDOWN=1 plays a guest that ignores the ACPI power button.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

BOOT_TEXT = "Consoles: EFI console\nFreeBSD/amd64 (fake) starting...\nStarting sshd.\n"


def parse(argv: list[str]) -> dict[str, object]:
    chardevs: dict[str, dict[str, str]] = {}
    cfg: dict[str, object] = {"chardevs": chardevs}
    i = 0
    while i < len(argv):
        opt = argv[i]
        val = argv[i + 1] if i + 1 < len(argv) else ""
        if opt == "-qmp":
            cfg["qmp"] = val.split(",")[0].removeprefix("unix:")
        elif opt == "-chardev":
            kv = dict(p.split("=", 1) for p in val.split(",")[1:] if "=" in p)
            chardevs[kv["id"]] = kv
        elif opt == "-device" and val.startswith("virtserialport"):
            kv = dict(p.split("=", 1) for p in val.split(",")[1:] if "=" in p)
            if kv.get("name") == "org.fedoraproject.port.0":
                cfg["ready"] = kv["chardev"]
        elif opt == "-serial" and val.startswith("chardev:"):
            cfg["console"] = val.removeprefix("chardev:")
        elif opt == "-pidfile":
            cfg["pidfile"] = val
        elif opt == "-netdev" and "hostfwd=" in val:
            fwd = val.split("hostfwd=", 1)[1].split(",")[0]  # tcp:127.0.0.1:PORT-:22
            cfg["ssh_port"] = int(fwd.split("-", 1)[0].rsplit(":", 1)[1])
        i += 1
    return cfg


class Fake:
    def __init__(self, cfg: dict[str, object]) -> None:
        self.cfg = cfg
        self.sockets: list[str] = []
        self.sshd: subprocess.Popen[bytes] | None = None
        self.done = threading.Event()

    def listen(self, path: str) -> socket.socket:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(4)
        self.sockets.append(path)
        return s

    def serve(self, server: socket.socket, handler: object) -> None:
        def loop() -> None:
            while True:
                conn, _ = server.accept()
                threading.Thread(target=handler, args=(conn,), daemon=True).start()  # type: ignore[arg-type]

        threading.Thread(target=loop, daemon=True).start()

    def qmp(self, conn: socket.socket) -> None:
        conn.sendall(
            b'{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}\r\n'
        )
        decoder = json.JSONDecoder()
        buf = ""
        while True:
            data = conn.recv(4096)
            if not data:
                return
            buf += data.decode()
            while buf.strip():
                try:
                    msg, end = decoder.raw_decode(buf.lstrip())
                except ValueError:
                    break
                buf = buf.lstrip()[end:]
                cmd = msg.get("execute")
                if cmd == "query-status":
                    reply: dict[str, object] = {"return": {"status": "running", "running": True}}
                elif cmd in ("qmp_capabilities", "system_powerdown", "quit"):
                    reply = {"return": {}}
                else:
                    reply = {
                        "error": {"class": "CommandNotFound", "desc": f"The command {cmd} has not been found"}
                    }
                if "id" in msg:
                    reply["id"] = msg["id"]  # QEMU echoes the request's id
                if cmd == "system_powerdown":
                    # An asynchronous event may arrive before any reply; clients must skip it.
                    event = {"event": "RTC_CHANGE", "data": {"offset": 0}, "timestamp": {"seconds": 0}}
                    conn.sendall(json.dumps(event).encode() + b"\r\n")
                conn.sendall(json.dumps(reply).encode() + b"\r\n")
                if cmd == "quit" or (
                    cmd == "system_powerdown" and not os.environ.get("FAKE_QEMU_IGNORE_POWERDOWN")
                ):
                    self.done.set()

    def ready(self, conn: socket.socket) -> None:
        after = os.environ.get("FAKE_QEMU_READY_AFTER", "0.5")
        if after == "never":
            self.done.wait()
            return
        time.sleep(float(after))
        self.log("Ready: sshd and podman are up\n")
        conn.sendall(b"Ready\n")
        self.done.wait()

    def log(self, text: str) -> None:
        console = self.cfg.get("console")
        chardevs = self.cfg["chardevs"]
        assert isinstance(chardevs, dict)
        if console and chardevs[console].get("logfile"):
            with open(chardevs[console]["logfile"], "a") as fh:
                fh.write(text)

    def console(self, conn: socket.socket) -> None:
        conn.sendall(b"\r\nFreeBSD/amd64 (fake) (ttyu0)\r\n\r\nlogin: ")
        while True:
            data = conn.recv(4096)
            if not data:
                return
            self.log(data.decode(errors="replace"))
            conn.sendall(b"echo:" + data)

    def run(self) -> int:
        cfg = self.cfg
        chardevs = cfg["chardevs"]
        assert isinstance(chardevs, dict)
        if cfg.get("pidfile"):
            with open(str(cfg["pidfile"]), "w") as fh:
                fh.write(f"{os.getpid()}\n")
        self.log(BOOT_TEXT)
        sshd_config = os.environ.get("FAKE_QEMU_SSHD_CONFIG")
        if os.environ.get("FAKE_QEMU_SSH_PORT"):  # podman's gvproxy forward, which the argv does not show
            cfg["ssh_port"] = int(os.environ["FAKE_QEMU_SSH_PORT"])
        if sshd_config and cfg.get("ssh_port"):
            self.sshd = subprocess.Popen(
                ["/usr/sbin/sshd", "-D", "-e", "-f", sshd_config, "-p", str(cfg["ssh_port"])],
                stdin=subprocess.DEVNULL,
            )
        if cfg.get("console"):
            self.serve(self.listen(chardevs[cfg["console"]]["path"]), self.console)
        if cfg.get("ready"):
            self.serve(self.listen(chardevs[cfg["ready"]]["path"]), self.ready)
        if cfg.get("qmp"):
            self.serve(self.listen(str(cfg["qmp"])), self.qmp)
        self.done.wait()
        time.sleep(0.1)
        self.cleanup()
        return 0

    def cleanup(self) -> None:
        if self.sshd is not None:
            self.sshd.terminate()
            self.sshd.wait(5)
        for path in self.sockets:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if self.cfg.get("pidfile"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(self.cfg["pidfile"]))


def main() -> int:
    record = os.environ.get("FAKE_QEMU_RECORD")
    if record:
        with open(record, "a") as fh:
            fh.write(json.dumps(sys.argv[1:]) + "\n")
    fake = Fake(parse(sys.argv[1:]))

    def on_term(signum: int, frame: object) -> None:
        fake.cleanup()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    return fake.run()


if __name__ == "__main__":
    raise SystemExit(main())
