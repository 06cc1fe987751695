"""``fpvm machine`` commands: init, start, stop, ssh, console, list, inspect, rm.

The invariants: ``init`` builds everything in a hidden temporary directory and renames it into place
only when complete, so a failure leaves nothing behind; ``start`` trusts no runtime file a previous run
left (pid and sockets are checked live and cleaned when stale); every command that talks to the VM goes
through the files in ``state.Paths``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import select
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from fpvm.contract import MountError, check_target, volume_tag
from fpvm.fwcfg.protocol import FwCfgError
from fpvm.fwcfg.qmp import QmpClient
from fpvm.machine import connection, image, qemu, qemu_accel, qemu_host
from fpvm.machine import ignition as ign
from fpvm.machine.errors import MachineError
from fpvm.machine.state import (
    Machine,
    Paths,
    Volume,
    check_name,
    clean_stale,
    machines_root,
    pid_alive,
    vm_pid,
)
from fpvm.machine.state import load as load_machine
from fpvm.machine.state import save as save_machine

DEFAULT_CPUS = 2
DEFAULT_MEMORY = 2048
DEFAULT_DISK = 20
READY_TIMEOUT = 300
READY_TIMEOUT_TCG = 1200
STOP_TIMEOUT = 60
QMP_TIMEOUT = 5.0
TAIL_LINES = 25
ESCAPE = b"\x1d"  # Ctrl-]


def _warn(text: str) -> None:
    print(f"fpvm: warning: {text}", file=sys.stderr)


def _info(text: str) -> None:
    print(text, file=sys.stderr)


# -- init ------------------------------------------------------------------------------------------


def parse_volume(spec: str, index: int) -> Volume:
    """``SRC:DST[:ro|rw]`` -> Volume with tag ``fpvm<index>``; the source must be an existing folder."""
    parts = spec.split(":")
    readonly = False
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        readonly = parts[2] == "ro"
        parts = parts[:2]
    if len(parts) == 1:
        parts = [parts[0], parts[0]]
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise MachineError(f"volume {spec!r}: expected SRC:DST or SRC:DST:ro")
    src = Path(os.path.expandvars(parts[0])).expanduser()
    dst = os.path.expandvars(parts[1])
    if not src.exists():
        raise MachineError(f"volume {spec!r}: source folder {src} does not exist")
    if not src.is_dir():
        raise MachineError(f"volume {spec!r}: source {src} is not a folder (9p shares folders)")
    if not dst.startswith("/") or dst.rstrip("/") == "":
        raise MachineError(f"volume {spec!r}: target {dst!r} must be an absolute path other than /")
    try:
        # The guest's own rule: a target it refuses makes it reject the whole config (no users, no keys).
        target = check_target(dst)
    except MountError as exc:
        raise MachineError(f"volume {spec!r}: {exc}") from None
    if "\n" in str(src):
        raise MachineError(f"volume {spec!r}: QEMU cannot share a path containing a newline")
    return Volume(source=str(src.resolve()), target=target, readonly=readonly, tag=volume_tag(index))


def port_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        return False
    finally:
        s.close()
    return True


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
    finally:
        s.close()


def _host_uid() -> int:
    # podman passes the host uid so files on shared folders get the user's ownership; uid 0 (running
    # as root) would make a second root account named core, so fall back to the first user uid.
    uid = os.getuid()
    return uid if uid != 0 else 1000


def init(
    name: str,
    image_source: str,
    *,
    arch: str,
    cpus: int = DEFAULT_CPUS,
    memory: int = DEFAULT_MEMORY,
    disk_size: int = DEFAULT_DISK,
    volumes: list[str] | None = None,
    ssh_port: int | None = None,
    default_connection: bool = False,
    tls_verify: bool = True,
) -> Machine:
    check_name(name)
    final = machines_root() / name
    if final.exists():
        raise MachineError(f"machine {name!r} exists ({final}); remove it first: fpvm machine rm {name}")
    if cpus < 1:
        raise MachineError("--cpus must be at least 1")
    if memory < 256:
        raise MachineError("--memory is in MiB and must be at least 256")
    if disk_size < 1:
        raise MachineError("--disk-size is in GiB and must be at least 1")
    vols = [parse_volume(spec, i) for i, spec in enumerate(volumes or [])]
    targets = [v.target for v in vols]
    if len(set(targets)) != len(targets):
        raise MachineError("two volumes have the same target")
    if ssh_port is not None and not port_free(ssh_port):
        raise MachineError(f"--ssh-port {ssh_port}: 127.0.0.1:{ssh_port} is in use; choose another port")
    # Fail before a long download when the machine could never start here.
    exe = qemu_host.find_qemu(arch)
    if arch == "aarch64":
        qemu_host.find_firmware(exe)

    machines_root().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=machines_root()))
    try:
        os.chmod(work, 0o700)
        disk = work / "disk.img"
        if image_source.startswith("docker://"):
            from fpvm.machine import registry

            image_source = str(registry.fetch(image_source, arch, tls_verify=tls_verify))
        fmt = image.acquire(image_source, disk)
        image.grow(disk, fmt, disk_size)
        if arch == "aarch64":
            # pflash firmware (Homebrew's edk2, AAVMF) needs a writable 64 MiB vars store beside it;
            # sparse, so it costs nothing when -bios firmware is used instead.
            qemu_host.ensure_efi_vars(work / "efi-vars.fd")
        pubkey = ign.make_key(work / "id_ed25519", f"fpvm-{name}")
        uid = _host_uid()
        config = ign.build(pubkey, uid, vols, ign.host_timezone())
        from fpvm.fsutil import atomic_write

        atomic_write(work / "config.ign", ign.render(config), mode=0o600)
        machine = Machine(
            name=name,
            arch=arch,
            cpus=cpus,
            memory=memory,
            disk_size=disk_size,
            disk_format=fmt,
            ssh_port=ssh_port if ssh_port is not None else free_port(),
            uid=uid,
            image_source=image_source,
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            volumes=vols,
            default_connection=default_connection,
        )
        save_machine(machine, work)
        try:
            os.rename(work, final)
        except OSError as exc:
            raise MachineError(f"cannot create {final}: {exc}") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return machine


# -- start -----------------------------------------------------------------------------------------


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        data = path.read_bytes()[-65536:]
    except OSError:
        return ""
    text = data.decode("utf-8", "replace").replace("\r", "")
    return "\n".join(text.splitlines()[-lines:])


def _last_line(path: Path) -> str:
    tail = _tail(path, 5).strip().splitlines()
    return tail[-1][:80] if tail else ""


def plan_start(
    machine: Machine, paths: Paths, accel: str = "auto", network: str = "auto", probe: bool = False
) -> tuple[qemu.Plan, str | None]:
    """The argv and the one accelerator warning to show. With ``probe`` KVM/HVF are tried first
    (qemu_accel.resolve: fallback to TCG under ``auto``, an error when asked for explicitly); a dry run
    shows the unprobed choice and starts nothing."""
    exe = qemu_host.find_qemu(machine.arch)
    firmware = qemu_host.find_firmware(exe) if machine.arch == "aarch64" else None
    gvproxy = qemu.find_gvproxy() if network in ("auto", "gvproxy") else None
    host = qemu_host.Host.detect()
    warning = None
    if probe:
        choice = qemu_accel.resolve(exe, machine.arch, host, accel)
        accel, warning = choice.accel, choice.warning
    plan = qemu.build(
        machine,
        paths,
        qemu=exe,
        host=host,
        accel=accel,
        network=network,
        firmware=firmware,
        gvproxy=gvproxy,
    )
    return plan, warning


def _check_startable(machine: Machine, paths: Paths) -> None:
    for vol in machine.volumes:
        if not Path(vol.source).is_dir():
            raise MachineError(
                f"volume source {vol.source} (-> {vol.target}) does not exist any more: recreate the folder "
                f"or re-create the machine without it"
            )
    if not paths.disk.is_file():
        raise MachineError(
            f"disk {paths.disk} is missing: re-create the machine (fpvm machine rm {machine.name})"
        )
    if not port_free(machine.ssh_port):
        raise MachineError(
            f"port 127.0.0.1:{machine.ssh_port} (the ssh forward of {machine.name}) is in use by another "
            f"program: stop it, or re-create the machine with another --ssh-port"
        )


class _StatusLine:
    """One live line on stderr when it is a terminal; silent otherwise (logs stay clean)."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.status: Any = None

    def __enter__(self) -> _StatusLine:
        if self.console.is_terminal:
            self.status = self.console.status("")
            self.status.__enter__()
        return self

    def update(self, text: str) -> None:
        if self.status is not None:
            self.status.update(text)

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(None, None, None)


def _wait_ready(
    proc: subprocess.Popen[bytes] | None,
    pid_of: Callable[[], int | None],
    paths: Paths,
    deadline: float,
    name: str,
) -> None:
    """Block until the guest writes a line to the ready port; raise MachineError with the console tail."""
    start = time.monotonic()
    conn: socket.socket | None = None
    buf = b""
    with _StatusLine() as status:
        try:
            while True:
                now = time.monotonic()
                if proc is not None and proc.poll() is not None:
                    raise MachineError(_failure(f"QEMU exited with status {proc.returncode}", paths, name))
                if proc is None and pid_of() is None:
                    raise MachineError(_failure("QEMU exited", paths, name))
                if now >= deadline:
                    raise MachineError(
                        _failure(f"{name} was not ready after {deadline - start:.0f} s", paths, name)
                    )
                status.update(
                    f"Starting {name} ({now - start:.0f}s): waiting for the guest … "
                    + _last_line(paths.console_log)
                )
                if conn is None:
                    candidate = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        candidate.connect(str(paths.ready))
                    except OSError:
                        candidate.close()
                        time.sleep(0.2)
                        continue
                    conn = candidate
                conn.settimeout(max(0.05, min(0.5, deadline - now)))
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError as exc:
                    raise MachineError(_failure(f"ready socket: {exc}", paths, name)) from None
                if not data:
                    # QEMU closed the socket: it is going away; the next round reports how.
                    conn.close()
                    conn = None
                    time.sleep(0.2)
                    continue
                buf += data
                if b"\n" in buf:
                    return
        finally:
            if conn is not None:
                conn.close()


def _failure(what: str, paths: Paths, name: str) -> str:
    parts = [what + "."]
    qlog = _tail(paths.qemu_log, 10)
    if qlog:
        parts.append(f"QEMU said ({paths.qemu_log}):\n{qlog}")
    clog = _tail(paths.console_log)
    if clog:
        parts.append(f"Last console lines ({paths.console_log}):\n{clog}")
    else:
        parts.append(f"The console printed nothing ({paths.console_log}).")
    if qemu_accel.accel_failure(qlog):
        parts.append(
            f"The VM was stopped. QEMU's accelerator failed: `fpvm machine start {name} --accel tcg` "
            f"runs without it ({qemu_accel.TCG_COST})."
        )
    else:
        parts.append(
            f"The VM was stopped. Try again with `fpvm machine start {name}` "
            f"and watch `fpvm machine console {name}`."
        )
    return "\n".join(parts)


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        except OSError as exc:
            raise MachineError(f"cannot run {argv[0]}: {exc}") from None


def _wait_for(
    predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return predicate()
        time.sleep(0.05)
    return predicate()


def start(
    name: str,
    *,
    accel: str = "auto",
    network: str = "auto",
    timeout: float | None = None,
    dry_run: bool = False,
    default_connection: bool | None = None,
    out: IO[str] | None = None,
) -> int:
    out = out or sys.stdout
    machine = load_machine(name)
    paths = Paths.of(name)
    if dry_run:
        plan, _ = plan_start(machine, paths, accel, network)
        if plan.gvproxy_argv:
            print("# gvproxy: " + shlex.join(plan.gvproxy_argv), file=out)
        print(shlex.join(plan.argv), file=out)
        return 0
    if vm_pid(paths) is not None:
        raise MachineError(f"machine {name} is already running (fpvm machine stop {name})")
    for stale in clean_stale(paths):
        _info(f"removed stale {stale}")
    _check_startable(machine, paths)
    plan, accel_warning = plan_start(machine, paths, accel, network, probe=True)
    if accel_warning:
        _warn(accel_warning)
    paths.run.mkdir(parents=True, exist_ok=True, mode=0o700)
    if machine.arch == "aarch64" and "-bios" not in plan.argv:
        qemu_host.ensure_efi_vars(paths.efi_vars)

    gv: subprocess.Popen[bytes] | None = None
    if plan.gvproxy_argv:
        gv = _spawn(plan.gvproxy_argv, paths.dir / "gvproxy.log")
        if not _wait_for(paths.gvproxy_sock.exists, 10, gv):
            gv.kill()
            raise MachineError(f"gvproxy did not start: {_tail(paths.dir / 'gvproxy.log', 10)}")
    proc = _spawn(plan.argv, paths.qemu_log)
    try:
        if not _wait_for(lambda: paths.pidfile.exists() and paths.qmp.exists(), 30, proc):
            raise MachineError(_failure("QEMU did not start", paths, name))
        limit = (
            timeout if timeout is not None else (READY_TIMEOUT_TCG if plan.accel == "tcg" else READY_TIMEOUT)
        )
        _wait_ready(proc, lambda: vm_pid(paths), paths, time.monotonic() + limit, name)
    except BaseException:
        _kill(proc, gv, paths)
        raise
    machine_default = machine.default_connection if default_connection is None else default_connection
    warning = connection.add(machine, paths, machine_default)
    if warning:
        _warn(warning)
    print(
        f"Machine {name} is ready (accel {plan.accel}, network {plan.network}, "
        f"ssh 127.0.0.1:{machine.ssh_port}).\n"
        f"  podman --connection {machine.connection} run --rm "
        "docker.io/freebsd/freebsd-runtime:15.0 uname -a\n"
        f"  fpvm machine ssh {name}",
        file=out,
    )
    return 0


def _kill(proc: subprocess.Popen[bytes], gv: subprocess.Popen[bytes] | None, paths: Paths) -> None:
    for p in (proc, gv):
        if p is not None and p.poll() is None:
            p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
    clean_stale(paths)


# -- stop ------------------------------------------------------------------------------------------


def stop(name: str, timeout: float = STOP_TIMEOUT, force: bool = False) -> int:
    """ACPI power button first (the guest shuts down cleanly), ``quit`` after ``timeout``, SIGKILL last."""
    load_machine(name)
    paths = Paths.of(name)
    pid = vm_pid(paths)
    if pid is None:
        clean_stale(paths)
        _info(f"machine {name} is not running")
        return 0
    with _StatusLine() as status:
        if not force:
            try:
                with QmpClient(str(paths.qmp), timeout=QMP_TIMEOUT) as q:
                    q.execute("system_powerdown")
            except FwCfgError as exc:
                _warn(str(exc))
            start = time.monotonic()
            while pid_alive(pid) and time.monotonic() - start < timeout:
                status.update(
                    f"Stopping {name} ({time.monotonic() - start:.0f}s/{timeout:.0f}s): guest shutting down …"
                )
                time.sleep(0.1)
        if pid_alive(pid):
            if not force:
                _warn(f"{name} did not power off within {timeout:.0f} s: quitting QEMU")
            with (
                contextlib.suppress(FwCfgError, OSError),
                QmpClient(str(paths.qmp), timeout=QMP_TIMEOUT) as q,
            ):
                q.execute("quit")
            if not _wait_for(lambda: not pid_alive(pid), 10):
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)
                _wait_for(lambda: not pid_alive(pid), 5)
    clean_stale(paths)
    _info(f"machine {name} stopped")
    return 0


# -- ssh, console ----------------------------------------------------------------------------------


def ssh_argv(machine: Machine, paths: Paths, user: str, command: list[str]) -> list[str]:
    return [
        "ssh",
        "-i",
        str(paths.key),
        "-p",
        str(machine.ssh_port),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"UserKnownHostsFile={paths.known_hosts}",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "SetEnv=LC_ALL=",
        f"{user}@127.0.0.1",
        *command,
    ]


def ssh(name: str, user: str = "root", command: list[str] | None = None) -> int:
    machine = load_machine(name)
    paths = Paths.of(name)
    if vm_pid(paths) is None:
        raise MachineError(f"machine {name} is not running (fpvm machine start {name})")
    if shutil.which("ssh") is None:
        raise MachineError("ssh not found: install OpenSSH")
    return subprocess.call(ssh_argv(machine, paths, user, command or []))


def console(name: str, stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None) -> int:
    """Attach to the serial console; Ctrl-] detaches. Without a terminal, relays until stdin ends."""
    load_machine(name)
    paths = Paths.of(name)
    if vm_pid(paths) is None:
        raise MachineError(
            f"machine {name} is not running (fpvm machine start {name}); its last console output is in "
            f"{paths.console_log}"
        )
    return attach(paths.console, stdin, stdout)


def attach(path: Path, stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None) -> int:
    src = stdin or sys.stdin.buffer
    dst = stdout or sys.stdout.buffer
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise MachineError(f"cannot connect to the console at {path}: {exc}") from None
    fd = src.fileno()
    tty_state = None
    if os.isatty(fd):
        import termios
        import tty

        tty_state = termios.tcgetattr(fd)
        tty.setraw(fd)
        dst.write(b"[connected; Ctrl-] to detach]\r\n")
        dst.flush()
    try:
        _relay(sock, fd, dst, interactive=tty_state is not None)
    finally:
        if tty_state is not None:
            import termios

            termios.tcsetattr(fd, termios.TCSADRAIN, tty_state)
        sock.close()
    return 0


def _relay(sock: socket.socket, fd: int, dst: IO[bytes], interactive: bool) -> None:
    stdin_open = True
    quiet_since: float | None = None
    while True:
        wait: list[socket.socket | int] = [sock, fd] if stdin_open else [sock]
        ready, _, _ = select.select(wait, [], [], 0.2)
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            dst.write(data)
            dst.flush()
            quiet_since = None if stdin_open else time.monotonic()
        if stdin_open and fd in ready:
            data = os.read(fd, 4096)
            if interactive and ESCAPE in data:
                data = data.split(ESCAPE, 1)[0]
                if data:
                    sock.sendall(data)
                return
            if not data:
                stdin_open = False
                quiet_since = time.monotonic()
            else:
                sock.sendall(data)
        # Input ended (a pipe): leave once the console has been quiet for a moment.
        if not stdin_open and quiet_since is not None and time.monotonic() - quiet_since > 1.0:
            return


# -- list, inspect, rm -----------------------------------------------------------------------------


def describe(machine: Machine) -> dict[str, Any]:
    paths = Paths.of(machine.name)
    pid = vm_pid(paths)
    return {
        **machine.to_json(),
        "state": "running" if pid is not None else "stopped",
        "pid": pid,
        "connection": {
            "name": machine.connection,
            "uri": connection.uri(machine),
            "identity": str(paths.key),
        },
        "paths": {
            "dir": str(paths.dir),
            "disk": str(paths.disk),
            "config": str(paths.config),
            "key": str(paths.key),
            "console_log": str(paths.console_log),
            "qmp": str(paths.qmp),
            "ready": str(paths.ready),
            "console": str(paths.console),
        },
    }


def list_machines(as_json: bool = False, out: IO[str] | None = None) -> int:
    from fpvm.machine.state import names

    out = out or sys.stdout
    rows = [describe(load_machine(n)) for n in names()]
    if as_json:
        print(json.dumps(rows, indent=2), file=out)
        return 0
    header = ("NAME", "ARCH", "STATE", "CPUS", "MEMORY", "DISK", "SSH PORT")
    table = [header] + [
        (
            r["name"],
            r["arch"],
            r["state"],
            str(r["cpus"]),
            f"{r['memory']} MiB",
            f"{r['disk_size']} GiB",
            str(r["ssh_port"]),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)
    return 0


def inspect(names: list[str], out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    print(json.dumps([describe(load_machine(n)) for n in names], indent=2), file=out)
    return 0


def rm(name: str, force: bool = False) -> int:
    machine = load_machine(name)
    paths = Paths.of(name)
    if vm_pid(paths) is not None:
        if not force:
            raise MachineError(
                f"machine {name} is running: stop it first (fpvm machine stop {name}) or use --force"
            )
        stop(name, force=True)
    warning = connection.remove(machine)
    if warning:
        _warn(warning)
    clean_stale(paths)
    with contextlib.suppress(OSError):
        paths.run.rmdir()
    shutil.rmtree(paths.dir)
    _info(f"machine {name} removed")
    return 0
