"""The one stand-in for qemu-system-*, for every test that starts "QEMU" without a guest to boot.

It reads a real QEMU command line (fpvm machine's, the builder VM's, podman 4.3.1's) and serves what a
host sees of a VM: QMP (``-qmp unix:PATH,server=on``: a JSON stream; greeting, qmp_capabilities,
query-status, stop/cont, system_powerdown, quit; ``-qmp stdio``: the same on stdin/stdout, which is how
fpvm probes an accelerator), the virtio-serial ready port (``Ready\\n`` once the "guest" booted), the
serial console socket with its log file, the pid file. Option strings are read as QEMU reads them
(``,,`` is a literal comma).

Two ways to run it (standard library only; both as a wrapper script's ``exec``):

``python3 qemu.py HARNESS_JSON QEMU_ARGS...`` -- the podman contract tests (tests/contract): the "boot"
is fpvm's guest agent provisioning a staged root from the fw_cfg file named on the command line;
``Ready`` is written only after it succeeded; the harness JSON names the log, pid and result files.
The virtio-9p devices of the command line (``-virtfs``, or ``-fsdev local,id=F,...`` with ``-device
virtio-9p-pci,fsdev=F,mount_tag=T``) are written, in device order, to the harness's ``p9_devices``
file: what the FreeBSD guest would see as ``dev.virtio_p9fs.<unit>.p9fs_mount_tag`` (the guest shell's
recording runner answers ``sysctl -e dev.virtio_p9fs`` from it).

Client sockets (``-chardev socket,...`` without ``server=on``, e.g. podman 5's virtiofsd sockets) are
connected at start and held for the VM's life, as QEMU does; a missing one fails like QEMU.

``python3 qemu.py QEMU_ARGS...`` -- fpvm's own tests, steered by the environment:
- ``FAKE_QEMU_RECORD=FILE``: append each command line as a JSON line (probes included).
- ``FAKE_QEMU_ACCEL_FAIL=kvm|kvm-abort|kvm-module|hvf``: fail the way QEMU fails on hosts where the
  accelerator exists but cannot run a VM (nested or paravirtual KVM, HVF without entitlement): QEMU's
  message on stderr and exit status 1 at once (``kvm-abort``: SIGABRT after the message, as QEMU 7.2's
  failed assertion does) -- only when the command line asks for that accelerator (``-accel kvm``,
  ``-enable-kvm``, ``-machine ...,accel=kvm``, ``-cpu host``; ``hvf`` likewise). TCG always works.
- ``FAKE_QEMU_READY_AFTER=SECONDS|never`` (default 0.5): when the guest signals Ready.
- ``FAKE_QEMU_IGNORE_POWERDOWN=1``: a guest that ignores the ACPI power button.
- ``FAKE_QEMU_SSHD_CONFIG=FILE`` (and ``FAKE_QEMU_SSH_PORT``): OpenSSH's sshd on the forwarded port, as
  QEMU's hostfwd would reach the guest's sshd.
- A builder VM (``-chardev file,...`` serial and a drive with ``id=output``) "builds": it writes the
  bytes of ``FAKE_QEMU_BUILD_IMAGE`` (a file; default a fixed text) to the output disk, the
  ``FPVM-BUILD-OK size=N sha256=H`` line to the serial file, and powers off (exit 0).
"""

from __future__ import annotations

import contextlib
import hashlib
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
BOOT_TEXT = "Consoles: EFI console\nFreeBSD/amd64 (fake) starting...\nStarting sshd.\n"
BUILD_IMAGE = b"FreeBSD image written by the stand-in builder VM\n" * 64

# What QEMU 7.2 prints when the accelerator exists but cannot run a VM ({0} is the program name).
ACCEL_FAILURES = {
    "kvm": "{0}: error: failed to set MSR 0x10a to 0x69\n"
    "{0}: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' "
    "failed.\n",
    "kvm-module": "Could not access KVM kernel module: No such file or directory\n"
    "{0}: -accel kvm: failed to initialize kvm: No such file or directory\n",
    "hvf": "{0}: -accel hvf: Error: HV_ERROR\n",
}


class Log:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.lock = threading.Lock()

    def __call__(self, msg: str) -> None:
        if self.path is None:
            return
        with self.lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} qemu[{os.getpid()}] {msg}\n")


def split_options(value: str) -> list[str]:
    """``a=1,b=x,,y`` -> ``["a=1", "b=x,y"]``: QEMU's option syntax, where ``,,`` is a literal comma."""
    parts, cur, i = [], "", 0
    while i < len(value):
        if value[i] == ",":
            if value[i + 1 : i + 2] == ",":
                cur += ","
                i += 2
                continue
            parts.append(cur)
            cur = ""
        else:
            cur += value[i]
        i += 1
    parts.append(cur)
    return parts


def option_map(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in split_options(value):
        key, _, val = part.partition("=")
        out[key] = val
    return out


def parse_args(argv: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {
        "chardevs": {},
        "virtfs": [],
        "fsdevs": {},
        "p9": [],
        "ready_id": None,
        "drives": {},
        "accels": [],
    }
    i = 0
    while i < len(argv):
        opt = argv[i]
        val = argv[i + 1] if i + 1 < len(argv) else ""
        if opt == "-fw_cfg":
            m = option_map(val)
            if m.get("name") == "opt/com.coreos/config":
                found["ignition"] = m["file"]
        elif opt == "-qmp":
            found["qmp"] = split_options(val)[0].removeprefix("unix:")
        elif opt == "-chardev":
            kind, *rest = split_options(val)
            m = {"kind": kind}
            for part in rest:
                key, _, value = part.partition("=")
                m[key] = value
            if "id" in m:
                found["chardevs"][m["id"]] = m
        elif opt == "-device" and val.startswith("virtserialport,"):
            m = option_map(val.split(",", 1)[1])
            if m.get("name") == "org.fedoraproject.port.0":
                found["ready_id"] = m.get("chardev")
        elif opt == "-serial" and val.startswith("chardev:"):
            found["console"] = val.removeprefix("chardev:")
        elif opt == "-pidfile":
            found["pidfile"] = val
        elif opt == "-virtfs":
            virtfs = option_map(val.split(",", 1)[1])
            found["virtfs"].append(virtfs)
            found["p9"].append(_p9_device(virtfs.get("mount_tag", ""), virtfs))
        elif opt == "-fsdev":
            kind, _, rest = val.partition(",")
            fsdev = option_map(rest)
            fsdev["kind"] = kind
            found["fsdevs"][fsdev.get("id", "")] = fsdev
        elif opt == "-device" and split_options(val)[0] == "virtio-9p-pci":
            dev = option_map(val.split(",", 1)[1] if "," in val else "")
            found["p9"].append({"fsdev": dev.get("fsdev", ""), "tag": dev.get("mount_tag", "")})
        elif opt == "-drive":
            m = option_map(val)
            if "id" in m:
                found["drives"][m["id"]] = m
        elif opt == "-netdev" and "hostfwd=" in val:
            fwd = option_map(val)["hostfwd"]  # tcp:127.0.0.1:PORT-:22
            found["ssh_port"] = int(fwd.split("-", 1)[0].rsplit(":", 1)[1])
        elif opt == "-accel":
            found["accels"].append(split_options(val)[0])
        elif opt == "-enable-kvm":
            found["accels"].append("kvm")
        elif opt == "-machine" and "accel" in option_map(val):
            found["accels"] += option_map(val)["accel"].split(":")
        elif opt == "-cpu":
            found["cpu"] = split_options(val)[0]
        elif opt == "-name":
            found["name"] = val
        i += 2 if opt.startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("-") else 1
    chardev = found["chardevs"].get(found["ready_id"] or "", {})
    found["ready"] = chardev.get("path", "")
    # a virtio-9p-pci device takes its folder (and its tag, when the device has none) from its -fsdev
    for dev in found["p9"]:
        if "fsdev" in dev:
            fsdev = found["fsdevs"].get(dev.pop("fsdev"), {})
            dev.update(_p9_device(dev["tag"] or fsdev.get("mount_tag", ""), fsdev))
    return found


def _p9_device(tag: str, opts: dict[str, str]) -> dict[str, Any]:
    """One 9p device as the guest sees it: tag, host folder, read-only (``readonly`` or ``readonly=on``)."""
    readonly = "readonly" in opts and opts["readonly"] not in ("off", "false", "no")
    return {"tag": tag, "path": opts.get("path", ""), "readonly": readonly}


def client_sockets(args: dict[str, Any]) -> list[tuple[str, str]]:
    """(id, path) of every ``-chardev socket`` QEMU connects to rather than listens on."""
    return [
        (cid, c["path"])
        for cid, c in args["chardevs"].items()
        if c.get("kind") == "socket" and c.get("path") and c.get("server", "off") in ("off", "false", "no")
    ]


def accel_failure(args: dict[str, Any], program: str) -> str | None:
    """The message of FAKE_QEMU_ACCEL_FAIL when this command line asks for the failing accelerator."""
    mode = os.environ.get("FAKE_QEMU_ACCEL_FAIL", "")
    if not mode:
        return None
    wanted = set(args["accels"])
    if args.get("cpu") == "host":
        wanted.add("hvf" if "hvf" in wanted else "kvm")
    failing = "hvf" if mode == "hvf" else "kvm"
    if failing not in wanted:
        return None
    return ACCEL_FAILURES["kvm" if mode == "kvm-abort" else mode].format(program)


def listen(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
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


def qmp_session(recv: Any, send_bytes: Any, stop: threading.Event, log: Log, *, running: bool = True) -> None:
    """One QMP client: a JSON stream in (no newlines needed, as podman sends it), replies out."""
    decoder = json.JSONDecoder()
    buf = ""

    def send(obj: dict[str, Any]) -> None:
        send_bytes(json.dumps(obj).encode() + b"\r\n")

    send(GREETING)
    while True:
        data = recv()
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
                status = "running" if running else "prelaunch"
                reply: dict[str, Any] = {
                    "return": {"status": status, "singlestep": False, "running": running}
                }
            elif cmd in ("qmp_capabilities", "system_powerdown", "quit", "stop", "cont"):
                reply = {"return": {}}
            else:
                reply = {
                    "error": {"class": "CommandNotFound", "desc": f"The command {cmd} has not been found"}
                }
            if isinstance(msg, dict) and "id" in msg:
                reply["id"] = msg["id"]  # QEMU echoes the request's id
            if cmd == "system_powerdown":
                # An asynchronous event may arrive before any reply; clients must skip it.
                send({"event": "RTC_CHANGE", "data": {"offset": 0}, "timestamp": {"seconds": 0}})
            stopping = cmd == "quit" or (
                cmd == "system_powerdown" and not os.environ.get("FAKE_QEMU_IGNORE_POWERDOWN")
            )
            try:
                send(reply)
                if stopping and cmd == "system_powerdown":
                    send(
                        {"event": "POWERDOWN", "timestamp": {"seconds": int(time.time()), "microseconds": 0}}
                    )
            finally:
                if stopping:  # also when the client hung up after the request (podman 5 does at once)
                    stop.set()


class Vm:
    """The VM as the host sees it; ``harness`` set: the podman contract's agent-provisioning boot."""

    def __init__(self, args: dict[str, Any], harness: dict[str, Any] | None) -> None:
        self.args = args
        self.harness = harness
        self.log = Log(harness["log"] if harness else None)
        self.sockets: list[str] = []
        self.stop = threading.Event()
        self.booted = threading.Event()
        self.ok: list[bool] = []
        self.sshd: subprocess.Popen[bytes] | None = None
        self.held: list[socket.socket] = []

    def connect_clients(self, program: str) -> str | None:
        """Connect every client chardev (QEMU does at start); QEMU's message when one is missing."""
        for cid, path in client_sockets(self.args):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.connect(path)
            except OSError as exc:
                conn.close()
                return (
                    f"{program}: -chardev socket,id={cid},path={path}: "
                    f"Failed to connect to '{path}': {exc.strerror}\n"
                )
            self.held.append(conn)  # closed when this process exits: the peer sees EOF, as with QEMU
        return None

    def serve(self, path: str, handler: Any) -> None:
        server = listen(path)
        self.sockets.append(path)

        def loop() -> None:
            while not self.stop.is_set():
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                threading.Thread(target=handler, args=(conn,), daemon=True).start()

        threading.Thread(target=loop, daemon=True).start()

    def boot(self) -> None:
        if self.harness is not None:
            self.ok.append(provision(self.harness, self.args["ignition"], self.log))
        else:
            after = os.environ.get("FAKE_QEMU_READY_AFTER", "0.5")
            if after == "never":
                return
            time.sleep(float(after))
            self.ok.append(True)
        self.booted.set()

    def qmp(self, conn: socket.socket) -> None:
        with conn:
            qmp_session(lambda: conn.recv(65536), conn.sendall, self.stop, self.log)

    def ready(self, conn: socket.socket) -> None:
        with conn:
            while not self.booted.wait(0.1):
                if self.stop.is_set():
                    return
            if not (self.ok and self.ok[0]):
                self.log("agent failed: no Ready, powering off")
                self.stop.set()
                return
            self.console_log("Ready: sshd and podman are up\n")
            conn.sendall(b"Ready\n")
            self.log("sent Ready")
            self.stop.wait()

    def console_log(self, text: str) -> None:
        chardev = self.args["chardevs"].get(self.args.get("console") or "", {})
        if chardev.get("logfile"):
            with open(chardev["logfile"], "a", encoding="utf-8") as fh:
                fh.write(text)

    def console(self, conn: socket.socket) -> None:
        with conn:
            conn.sendall(b"\r\nFreeBSD/amd64 (fake) (ttyu0)\r\n\r\nlogin: ")
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                self.console_log(data.decode(errors="replace"))
                conn.sendall(b"echo:" + data)

    def run(self) -> int:
        args = self.args
        if args.get("pidfile"):
            Path(args["pidfile"]).write_text(f"{os.getpid()}\n", encoding="utf-8")
        self.console_log(BOOT_TEXT)
        sshd_config = os.environ.get("FAKE_QEMU_SSHD_CONFIG")
        if os.environ.get("FAKE_QEMU_SSH_PORT"):  # podman's gvproxy forward, which the argv does not show
            args["ssh_port"] = int(os.environ["FAKE_QEMU_SSH_PORT"])
        if sshd_config and args.get("ssh_port"):
            self.sshd = subprocess.Popen(
                ["/usr/sbin/sshd", "-D", "-e", "-f", sshd_config, "-p", str(args["ssh_port"])],
                stdin=subprocess.DEVNULL,
            )
        console = args["chardevs"].get(args.get("console") or "", {})
        if console.get("kind") == "socket":
            self.serve(console["path"], self.console)
        if args["ready"]:
            self.serve(args["ready"], self.ready)
        if args.get("qmp"):
            self.serve(args["qmp"], self.qmp)
        threading.Thread(target=self.boot, daemon=True).start()
        self.stop.wait()
        # A guest takes a moment to shut down after the ACPI power button; podman reads our pid file
        # meanwhile and then waits for the pid to go away (the pid file is left, as after a crash).
        self.log("powering off")
        time.sleep(1.0 if self.harness else 0.1)
        self.cleanup()
        if self.harness is not None:
            return 0 if self.ok and self.ok[0] else 1
        return 0

    def cleanup(self) -> None:
        if self.sshd is not None:
            self.sshd.terminate()
            self.sshd.wait(5)
        for path in self.sockets:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if self.harness is None and self.args.get("pidfile"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.args["pidfile"])


def build(args: dict[str, Any]) -> int:
    """A builder VM: the image on the output disk, the result line on the serial console, power off."""
    source = os.environ.get("FAKE_QEMU_BUILD_IMAGE")
    image = Path(source).read_bytes() if source else BUILD_IMAGE
    with open(args["drives"]["output"]["file"], "r+b") as fh:
        fh.write(image)
    serial = args["chardevs"][args["console"]]["path"]
    with open(serial, "a", encoding="utf-8") as fh:
        fh.write(BOOT_TEXT + "fpvm: building inside the builder VM (stand-in)\n")
        fh.write(f"FPVM-BUILD-OK size={len(image)} sha256={hashlib.sha256(image).hexdigest()}\n")
    return 0


def main() -> int:
    argv = sys.argv[1:]
    harness: dict[str, Any] | None = None
    if argv and not argv[0].startswith("-"):
        harness = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        argv = argv[1:]
    record = os.environ.get("FAKE_QEMU_RECORD")
    if record:
        with open(record, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(argv) + "\n")
    args = parse_args(argv)
    program = "qemu-system-aarch64" if any(a.startswith("virt") for a in argv) else "qemu-system-x86_64"
    failure = accel_failure(args, program)
    if failure is not None:
        sys.stderr.write(failure)
        sys.stderr.flush()
        if os.environ.get("FAKE_QEMU_ACCEL_FAIL") == "kvm-abort":
            os.abort()
        return 1
    if args.get("qmp") == "stdio":  # fpvm's accelerator probe: paused, QMP on stdin/stdout
        stop = threading.Event()
        qmp_session(lambda: os.read(0, 65536), _stdout_write, stop, Log(None), running=False)
        return 0
    console = args["chardevs"].get(args.get("console") or "", {})
    if console.get("kind") == "file" and "output" in args["drives"]:
        return build(args)
    vm = Vm(args, harness)
    refused = vm.connect_clients(program)
    if refused is not None:
        vm.log(refused.strip())
        sys.stderr.write(refused)
        return 1
    if harness is not None:
        log = vm.log
        log("argv: " + json.dumps(argv))
        os.makedirs(harness["pids"], exist_ok=True)
        Path(harness["pids"], f"qemu-{os.getpid()}").write_text(f"{os.getpid()}\n", encoding="utf-8")
        with open(harness["qemu_args"], "w", encoding="utf-8") as fh:
            json.dump(args, fh)
        if harness.get("p9_devices"):
            devices = [{"unit": n, **dev} for n, dev in enumerate(args["p9"])]
            with open(harness["p9_devices"], "w", encoding="utf-8") as fh:
                json.dump(devices, fh)
        signal.signal(signal.SIGTERM, lambda *_: vm.stop.set())
    else:

        def on_term(signum: int, frame: object) -> None:
            vm.cleanup()
            os._exit(0)

        signal.signal(signal.SIGTERM, on_term)
    return vm.run()


def _stdout_write(data: bytes) -> None:
    os.write(1, data)


if __name__ == "__main__":
    sys.exit(main())
