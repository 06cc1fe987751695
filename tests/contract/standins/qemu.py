"""A stand-in for qemu-system-*: what podman 4.3.1 talks to, with fpvm's guest agent as the "guest".

podman starts the command line from the machine JSON (``CmdLine``) and then acts as the client of two
unix sockets this process serves: QMP (``-qmp unix:PATH,server=on``) and the virtio-serial ready port
(``-chardev socket,path=PATH,server=on`` bound to ``org.fedoraproject.port.0``). The "boot" is fpvm's
agent provisioning a staged root from the fw_cfg file named on our own command line; ``Ready\\n`` is
written only after it succeeded. QMP: podman sends JSON objects without newlines, so the input is
parsed as a stream. ``system_powerdown`` ends the process, as a guest powering off would.

Standard library only; runs as the unprivileged podman user. Usage (from a wrapper script):
``python3 qemu.py HARNESS_JSON QEMU_ARGS...``
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

GREETING = {
    "QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}
}


class Log:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()

    def __call__(self, msg: str) -> None:
        with self.lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} qemu[{os.getpid()}] {msg}\n")


def option_map(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in value.split(","):
        key, _, val = part.partition("=")
        out[key] = val
    return out


def parse_args(argv: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {"chardevs": {}, "virtfs": [], "ready_id": None}
    i = 0
    while i < len(argv):
        opt = argv[i]
        val = argv[i + 1] if i + 1 < len(argv) else ""
        if opt == "-fw_cfg":
            m = option_map(val)
            if m.get("name") == "opt/com.coreos/config":
                found["ignition"] = m["file"]
        elif opt == "-qmp":
            found["qmp"] = val.split(",", 1)[0].removeprefix("unix:")
        elif opt == "-chardev":
            kind, _, rest = val.partition(",")
            m = option_map(rest)
            if kind == "socket" and "id" in m:
                found["chardevs"][m["id"]] = m.get("path", "")
        elif opt == "-device" and val.startswith("virtserialport,"):
            m = option_map(val.split(",", 1)[1])
            if m.get("name") == "org.fedoraproject.port.0":
                found["ready_id"] = m.get("chardev")
        elif opt == "-pidfile":
            found["pidfile"] = val
        elif opt == "-virtfs":
            found["virtfs"].append(option_map(val.split(",", 1)[1]))
        i += 2 if opt.startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("-") else 1
    found["ready"] = found["chardevs"].get(found["ready_id"] or "", "")
    return found


def listen(path: str) -> socket.socket:
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    return srv


def provision(cfg: dict[str, Any], ignition: str, log: Log) -> bool:
    """Run fpvm's guest agent on the staged root, as the VM's boot would."""
    argv = [
        cfg["python"],
        "-m",
        "fpvm",
        "guest",
        "provision",
        "--root",
        cfg["staged"],
        "--config",
        ignition,
        "--record",
        cfg["agent_record"],
        "--no-ready",
    ]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": cfg["src"], "HOME": cfg["staged"], "LC_ALL": "C.UTF-8"}
    log("boot: " + " ".join(argv))
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    log(f"agent exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    with open(cfg["agent_status"], "w", encoding="utf-8") as fh:
        json.dump({"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}, fh)
    return proc.returncode == 0


def serve_qmp(conn: socket.socket, stop: threading.Event, log: Log) -> None:
    decoder = json.JSONDecoder()
    buf = ""

    def send(obj: dict[str, Any]) -> None:
        conn.sendall(json.dumps(obj).encode() + b"\r\n")

    send(GREETING)
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buf += data.decode("utf-8", "replace")
            while True:
                buf = buf.lstrip()
                if not buf:
                    break
                try:
                    msg, end = decoder.raw_decode(buf)
                except ValueError:
                    break  # incomplete object: wait for more bytes
                buf = buf[end:]
                cmd = msg.get("execute") if isinstance(msg, dict) else None
                log(f"qmp: {cmd}")
                if cmd == "query-status":
                    send({"return": {"status": "running", "singlestep": False, "running": True}})
                elif cmd in ("qmp_capabilities", "system_powerdown", "quit", "stop", "cont"):
                    send({"return": {}})
                    if cmd in ("system_powerdown", "quit"):
                        send(
                            {
                                "event": "POWERDOWN",
                                "timestamp": {"seconds": int(time.time()), "microseconds": 0},
                            }
                        )
                        stop.set()
                else:
                    send(
                        {
                            "error": {
                                "class": "CommandNotFound",
                                "desc": f"The command {cmd} has not been found",
                            }
                        }
                    )


def main() -> int:
    cfg: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    log = Log(cfg["log"])
    args = parse_args(sys.argv[2:])
    log("argv: " + json.dumps(sys.argv[2:]))
    os.makedirs(cfg["pids"], exist_ok=True)
    with open(os.path.join(cfg["pids"], f"qemu-{os.getpid()}"), "w", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()}\n")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.get("pidfile"):
        with open(args["pidfile"], "w", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
    with open(cfg["qemu_args"], "w", encoding="utf-8") as fh:
        json.dump(args, fh)
    qmp = listen(args["qmp"])
    ready = listen(args["ready"])
    booted = threading.Event()
    ok: list[bool] = []

    def boot() -> None:
        ok.append(provision(cfg, args["ignition"], log))
        booted.set()

    def ready_port() -> None:
        conn, _ = ready.accept()
        booted.wait()
        if ok and ok[0]:
            conn.sendall(b"Ready\n")
            log("sent Ready")
        else:
            log("agent failed: no Ready, powering off")
            conn.close()
            stop.set()
            return
        stop.wait()
        conn.close()

    def qmp_accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = qmp.accept()
            except OSError:
                return
            threading.Thread(target=serve_qmp, args=(conn, stop, log), daemon=True).start()

    for target in (boot, ready_port, qmp_accept):
        threading.Thread(target=target, daemon=True).start()
    stop.wait()
    # A guest takes a moment to shut down after the ACPI power button; podman reads our pid file
    # meanwhile and then waits for the pid to go away (the pid file is left, as after a crash).
    log("powering off")
    time.sleep(1.0)
    for path in (args["qmp"], args["ready"]):
        if path and os.path.exists(path):
            os.unlink(path)
    return 0 if ok and ok[0] else 1


if __name__ == "__main__":
    sys.exit(main())
