"""Helpers for people who run the FreeBSD image with ``podman machine`` itself.

podman 4.x stores the whole QEMU argv in the machine's JSON (``CmdLine``) and uses it verbatim at
start, but gives no way to see the guest's console: when a FreeBSD guest never signals Ready, podman
waits forever with nothing to look at. ``console`` adds a serial console to that argv (a unix socket
plus a log file); ``doctor`` checks, in the order podman needs them, the pieces that make a start hang
or a connection fail, and says what to do about each.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fpvm.contract import FWCFG_CONFIG, READY_PORT, RUN_API_SOCKET, run_user_api_socket
from fpvm.fsutil import atomic_write
from fpvm.machine.errors import MachineError
from fpvm.machine.qemu_argv import serial_socket_args
from fpvm.machine.state import pid_alive, podman_config_home, read_pid, socket_listening

CONSOLE_ID = "fpvmconsole"
BACKUP_SUFFIX = ".fpvm-backup"
BANNER_TIMEOUT = 3.0  # sshd sends its banner at once; gvproxy with no guest sshd behind it sends nothing


def config_dir() -> Path:
    return podman_config_home() / "containers" / "podman" / "machine" / "qemu"


def data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "containers" / "podman" / "machine"


def _get(data: dict[str, Any], *keys: str) -> Any:
    cur: Any = data
    for key in keys:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur


@dataclasses.dataclass
class PodmanMachine:
    """The parts of a podman qemu machine JSON that matter here, for 4.x and 5.x layouts."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, name: str, config: str | None = None) -> PodmanMachine:
        path = Path(config) if config else config_dir() / f"{name}.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise MachineError(
                f"no podman machine {name!r}: {path} does not exist (podman machine list; only the qemu "
                "provider is supported)"
            ) from None
        except OSError as exc:
            raise MachineError(f"cannot read {path}: {exc.strerror or exc}") from None
        if not raw.strip():
            raise MachineError(
                f"{path} is empty: podman was interrupted while rewriting it; restore it from "
                f"{path}{BACKUP_SUFFIX} if fpvm made one, or re-create the machine"
            )
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise MachineError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise MachineError(f"{path} is not a podman machine file")
        return cls(path, data)

    @property
    def name(self) -> str:
        return str(self.data.get("Name") or self.path.stem)

    @property
    def v4(self) -> bool:
        return "CmdLine" in self.data

    @property
    def cmdline(self) -> list[str]:
        value = self.data.get("CmdLine")
        return [str(x) for x in value] if isinstance(value, list) else []

    @property
    def pidfile(self) -> Path | None:
        p = _get(self.data, "VMPidFilePath", "Path") or _get(
            self.data, "QEMUHypervisor", "QEMUPidPath", "Path"
        )
        return Path(p) if p else None

    @property
    def qmp(self) -> Path | None:
        p = _get(self.data, "QMPMonitor", "Address", "Path") or _get(
            self.data, "QEMUHypervisor", "QMPMonitor", "Address", "Path"
        )
        return Path(p) if p else None

    @property
    def ready(self) -> Path | None:
        p = _get(self.data, "ReadySocket", "Path")
        if p:
            return Path(p)
        qmp = self.qmp
        return qmp.parent / f"{self.name}.sock" if qmp else None  # 5.x: <runtime>/podman/<name>.sock

    @property
    def port(self) -> int | None:
        p = self.data.get("Port") or _get(self.data, "SSH", "Port")
        return int(p) if p else None

    @property
    def identity(self) -> str | None:
        p = self.data.get("IdentityPath") or _get(self.data, "SSH", "IdentityPath")
        return str(p) if p else None

    @property
    def user(self) -> str:
        return str(self.data.get("RemoteUsername") or _get(self.data, "SSH", "RemoteUsername") or "core")

    @property
    def rootful(self) -> bool:
        return bool(self.data.get("Rootful") or _get(self.data, "HostUser", "Rootful"))

    @property
    def uid(self) -> int | None:
        u = self.data.get("UID", _get(self.data, "HostUser", "UID"))
        return int(u) if isinstance(u, int) else None

    @property
    def host_api_socket(self) -> Path:
        if self.v4:
            return data_dir() / self.name / "podman.sock"
        qmp = self.qmp
        base = qmp.parent if qmp else Path("/tmp")
        return base / f"{self.name}-api.sock"

    @property
    def guest_api_socket(self) -> str:
        return RUN_API_SOCKET if self.rootful else run_user_api_socket(str(self.uid))

    def console_paths(self) -> tuple[Path, Path]:
        """(socket, log): socket beside podman's other runtime sockets, log beside the disk image."""
        ready = self.ready
        run_dir = ready.parent if ready else Path("/tmp")
        image = _get(self.data, "ImagePath", "Path")
        log_dir = Path(image).parent if image else self.path.parent
        return run_dir / f"{self.name}_console.sock", log_dir / f"{self.name}_console.log"

    def running(self) -> bool:
        pidfile = self.pidfile
        if pidfile is not None:
            pid = read_pid(pidfile)
            if pid is not None and pid_alive(pid):
                return True
        qmp = self.qmp
        return qmp is not None and socket_listening(qmp)


def console_args(sock: Path, log: Path) -> list[str]:
    return serial_socket_args(sock, log, CONSOLE_ID)


def has_console(cmdline: list[str]) -> bool:
    return any(f"id={CONSOLE_ID}," in arg or arg.endswith(f"id={CONSOLE_ID}") for arg in cmdline)


def dumps_like_podman(data: dict[str, Any]) -> bytes:
    """podman 4.x writes its machine files with ``json.MarshalIndent(v, "", " ")``: one-space indent."""
    return json.dumps(data, indent=1, ensure_ascii=False).encode()


def add_console(pm: PodmanMachine) -> bool:
    """Add the console to ``CmdLine``; False when it is already there. Backs the file up first."""
    if not pm.v4:
        raise MachineError(
            f"{pm.path} has no CmdLine: podman 5 builds the QEMU command at every start and keeps no "
            "place to add a console. Use `fpvm machine` to run the FreeBSD image, or podman 4.x."
        )
    if has_console(pm.cmdline):
        return False
    if pm.running():
        raise MachineError(
            f"podman machine {pm.name} is running: QEMU reads CmdLine only at start. Stop it "
            f"(podman machine stop {pm.name}), run this again, then start it"
        )
    backup = pm.path.with_name(pm.path.name + BACKUP_SUFFIX)
    original = pm.path.read_bytes()
    if not backup.exists():
        atomic_write(backup, original, mode=pm.path.stat().st_mode & 0o777)
    sock, log = pm.console_paths()
    pm.data["CmdLine"] = [*pm.cmdline, *console_args(sock, log)]
    text = dumps_like_podman(pm.data)
    if original.endswith(b"\n"):
        text += b"\n"
    atomic_write(pm.path, text, mode=pm.path.stat().st_mode & 0o777)
    return True


def console(name: str, config: str | None = None, wait: float = 0, attach_now: bool = True) -> int:
    from fpvm.machine.lifecycle import attach

    pm = PodmanMachine.load(name, config)
    sock, log = pm.console_paths()
    if not pm.running():
        if add_console(pm):
            print(
                f"Added a serial console to {pm.path} (backup: {pm.path.name}{BACKUP_SUFFIX}).",
                file=sys.stderr,
            )
            others = [a for a in pm.cmdline if a == "-serial"]
            if len(others) > 1:
                print(
                    "note: CmdLine already had a -serial; fpvm's console is the second serial port.",
                    file=sys.stderr,
                )
        else:
            print(f"{pm.path} already has fpvm's console.", file=sys.stderr)
        print(f"Console log: {log}", file=sys.stderr)
        if not attach_now:
            return 0
        if wait <= 0:
            print(
                f"Start the machine (podman machine start {pm.name}), then run "
                f"`fpvm podman-machine console {pm.name}` to attach (or pass --wait SECONDS).",
                file=sys.stderr,
            )
            return 0
        deadline = time.monotonic() + wait
        while not socket_listening(sock, 0.2):
            if time.monotonic() > deadline:
                raise MachineError(f"podman machine {pm.name} did not start within {wait:.0f} s")
            time.sleep(0.2)
    elif not has_console(pm.cmdline):
        raise MachineError(
            f"podman machine {pm.name} is running without fpvm's console: stop it "
            f"(podman machine stop {pm.name}), run this command again, then start it"
        )
    if not attach_now:
        return 0
    return attach(sock)


# -- doctor ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Check:
    name: str
    ok: bool | None  # None: skipped because an earlier check failed
    detail: str
    fix: str = ""


def _ssh_banner(port: int, timeout: float | None = None) -> tuple[str, str]:
    """('refused'|'silent'|'ssh', text): gvproxy accepts connections even when the guest's sshd is down."""
    timeout = BANNER_TIMEOUT if timeout is None else timeout
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError as exc:
        return "refused", str(exc)
    try:
        s.settimeout(timeout)
        data = s.recv(256)
    except OSError:
        data = b""
    finally:
        s.close()
    if data.startswith(b"SSH-"):
        return "ssh", data.split(b"\r\n")[0].decode("ascii", "replace")
    return "silent", data[:60].decode("ascii", "replace")


def _ping(path: Path, timeout: float = 5.0) -> str | None:
    """GET /_ping over the API socket; None when it answered OK, else what went wrong."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        data = b""
        while len(data) < 65536:
            part = s.recv(4096)
            if not part:
                break
            data += part
    except OSError as exc:
        return str(exc)
    finally:
        s.close()
    status = data.split(b"\r\n", 1)[0].decode("ascii", "replace")
    if " 200 " in status + " " and data.rstrip().endswith(b"OK"):
        return None
    return f"unexpected answer {status!r}"


def _ssh_run(pm: PodmanMachine, command: str) -> subprocess.CompletedProcess[str]:
    argv = [
        "ssh",
        "-i",
        pm.identity or "",
        "-p",
        str(pm.port),
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        f"{pm.user}@127.0.0.1",
        command,
    ]
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 255, "", "ssh timed out after 30 s")


def helpers_check(pm: PodmanMachine) -> Check:
    """Folders with podman >= 5.2 (virtio-fs) need fpvm's helpers for a FreeBSD guest."""
    from fpvm.machine import podman_helper_main, podman_helpers

    state = podman_helpers.status()
    mounts = [m for m in pm.data.get("Mounts") or [] if isinstance(m, dict)]
    virtiofs = [m for m in mounts if m.get("Type") == "virtiofs"]
    if pm.v4 or not virtiofs:
        why = "podman 4.x shares folders over 9p" if pm.v4 else "the machine shares no virtio-fs folders"
        have = "installed" if state.ok else "not installed"
        return Check("helpers", True, f"not needed ({why}); fpvm's podman 5.2+ helpers: {have}")
    image = str(_get(pm.data, "ImagePath", "Path") or "")
    if image and not podman_helper_main.is_freebsd_disk(image):
        detail = f"{image} is not a FreeBSD disk: its folders use virtio-fs and the real virtiofsd"
        return Check("helpers", True, detail)
    if not state.ok:
        return Check(
            "helpers",
            False,
            f"{len(virtiofs)} folder(s) use virtio-fs, which FreeBSD lacks, and {state.detail}",
            f"{state.fix}, then restart the machine (podman machine stop/start {pm.name})",
        )
    return Check("helpers", True, f"{len(virtiofs)} folder(s) are offered as 9p: {state.detail}")


def diagnose(pm: PodmanMachine) -> list[Check]:
    name = pm.name
    console_hint = (
        f"watch the guest boot: fpvm podman-machine console {name}"
        if pm.v4
        else "podman 5 has no console; run the image with `fpvm machine` to see its console"
    )
    checks: list[Check] = [
        Check("config", True, f"{pm.path} (podman {'4.x' if pm.v4 else '5.x'} layout)"),
        helpers_check(pm),
    ]
    if not pm.running():
        checks.append(Check("vm", False, "QEMU is not running", f"start it: podman machine start {name}"))
        return checks + [
            Check(n, None, "skipped: the VM is not running") for n in ("ready", "ssh", "login", "api")
        ]
    checks.append(Check("vm", True, "QEMU is running"))

    ready = pm.ready
    if ready is None or not socket_listening(ready):
        checks.append(
            Check(
                "ready",
                False,
                f"QEMU does not listen on the ready socket {ready}",
                "the machine was started without the virtio-serial ready port; re-create it with podman",
            )
        )
    elif pm.data.get("Starting"):
        checks.append(
            Check(
                "ready",
                False,
                f"podman is still waiting for the guest to write Ready to {READY_PORT}",
                f"the guest has not finished booting or its ready step failed; {console_hint}",
            )
        )
    else:
        checks.append(Check("ready", True, f"ready socket {ready} is served and podman is not waiting on it"))

    port = pm.port
    kind, text = _ssh_banner(port) if port else ("refused", "no port in the machine file")
    if kind == "refused":
        checks.append(
            Check(
                "ssh",
                False,
                f"nothing listens on 127.0.0.1:{port} ({text})",
                f"gvproxy is not running: podman machine stop {name} && podman machine start {name}",
            )
        )
    elif kind == "silent":
        checks.append(
            Check(
                "ssh",
                False,
                f"127.0.0.1:{port} accepts connections but no ssh server answers",
                f"the guest's sshd is not up (or the guest has no network: DHCP on vtnet0); {console_hint}",
            )
        )
    else:
        checks.append(Check("ssh", True, f"127.0.0.1:{port} answers {text}"))

    if kind != "ssh":
        checks += [Check(n, None, "skipped: ssh does not answer") for n in ("login", "api")]
        return checks
    if shutil.which("ssh") is None:
        checks.append(Check("login", None, "skipped: no ssh client on this host", "install OpenSSH"))
        return [*checks, Check("api", None, "skipped: no ssh client")]
    result = _ssh_run(pm, "true")
    if result.returncode != 0:
        checks.append(
            Check(
                "login",
                False,
                f"{pm.user}@127.0.0.1 with {pm.identity} was refused: {result.stderr.strip()[:200]}",
                f"the guest did not install the key from the Ignition config (fw_cfg {FWCFG_CONFIG}), "
                f"or the account is locked or sshd forbids it; {console_hint}",
            )
        )
        return [*checks, Check("api", None, "skipped: cannot log in")]
    checks.append(Check("login", True, f"{pm.user}@127.0.0.1 logs in with {pm.identity}"))

    guest_sock = pm.guest_api_socket
    result = _ssh_run(pm, f"test -S {guest_sock}")
    problems: list[str] = []
    fixes: list[str] = []
    if result.returncode != 0:
        problems.append(f"no API socket at {guest_sock} in the guest")
        fixes.append(
            "in the guest: service podman_service status (FreeBSD's podman is rootful; "
            "/run must point to /var/run); "
            f"or make the machine rootful: podman machine set --rootful {name}"
        )
    host_sock = pm.host_api_socket
    if not host_sock.exists():
        problems.append(f"no forwarded API socket on the host at {host_sock}")
        fixes.append(
            "gvproxy forwards it after a successful ssh login: "
            f"podman machine stop {name} && podman machine start {name}"
        )
    else:
        err = _ping(host_sock)
        if err:
            problems.append(f"{host_sock} does not answer /_ping: {err}")
            fixes.append(
                "the guest's podman service does not answer; check it with: podman machine ssh " + name
            )
    if problems:
        checks.append(Check("api", False, "; ".join(problems), "; ".join(fixes)))
    else:
        checks.append(Check("api", True, f"{host_sock} answers /_ping (guest {guest_sock})"))
    return checks


def doctor(name: str, config: str | None = None, as_json: bool = False) -> int:
    pm = PodmanMachine.load(name, config)
    checks = diagnose(pm)
    if as_json:
        print(json.dumps([dataclasses.asdict(c) for c in checks], indent=2))
    else:
        for c in checks:
            mark = {True: "ok", False: "PROBLEM", None: "skipped"}[c.ok]
            print(f"[{mark}] {c.name}: {c.detail}")
            if c.fix:
                print(f"    what to do: {c.fix}")
    return 0 if all(c.ok for c in checks) else 1
