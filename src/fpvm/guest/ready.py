"""Tell podman the VM is ready: ``Ready\\n`` on the virtio-serial port ``org.fedoraproject.port.0``.

``fpvm guest ready``: options in ``add_arguments``, handler ``ready_main``.

Why wait: podman 4.3 runs its ssh mount commands the moment it reads Ready, 5.x gives ssh about 15 s,
and gvproxy gives up forwarding the API socket after about a minute of failed logins. So Ready goes out
only when sshd answers with its SSH banner on port 22 and the API socket exists. When the deadline
passes, Ready is sent anyway (with a warning, exit status 1): podman then fails with an ssh error the
user can see, instead of waiting forever (its qemu provider has no timeout).

The port: FreeBSD's virtio_console names ports ``/dev/vtcon/<name>`` (a tty). If it is absent
(another hypervisor, module not loaded), the agent logs that and carries on (exit status 0).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import select
import socket
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fpvm.contract import API_SOCKET as API_SOCKET  # re-exported with READY_PORT
from fpvm.contract import READY_DEVICE as READY_PORT

if TYPE_CHECKING:
    from fpvm.guest.context import Log
    from fpvm.guest.rootfs import RootFS

READY_MESSAGE = b"Ready\n"
AUTO = "auto"  # wait for the API socket only when podman_service is enabled
DEFAULT_TIMEOUT = 300.0
DEFAULT_INTERVAL = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fpvm guest ready`` (see the module docstring)."""
    parser.add_argument("--root", default="/", help="target root (default /)")
    parser.add_argument("--port", default=READY_PORT, help=f"readiness port (default {READY_PORT})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds (default 300)")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help=argparse.SUPPRESS)
    parser.add_argument("--ssh-host", default="127.0.0.1", help="where sshd is probed (default: 127.0.0.1)")
    parser.add_argument("--ssh-port", type=int, default=22, help="sshd's port (default: 22)")
    parser.add_argument(
        "--api-socket",
        default=AUTO,
        help=f"API socket to wait for (default: auto = {API_SOCKET} when podman_service is enabled)",
    )
    parser.add_argument("--no-api-socket", action="store_true", help="do not wait for podman's API socket")


def sshd_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when something on host:port greets with an SSH identification line (``SSH-``).

    RFC 4253 4.2: the server sends ``SSH-protoversion-softwareversion`` first (it may send other lines
    before it). The probe sends its own identification before closing, like a client that gives up.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            data = b""
            while len(data) < 4096:
                chunk = conn.recv(4096 - len(data))
                if not chunk:
                    return False
                data += chunk
                if any(line.startswith(b"SSH-") for line in data.split(b"\n")[:-1]):
                    with contextlib.suppress(OSError):
                        conn.sendall(b"SSH-2.0-fpvm_ready_probe\r\n")
                    return True
            return False
    except OSError:
        return False


def is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


@dataclass
class Waited:
    """What the wait found: which conditions held when it ended, and how long it took."""

    sshd: bool
    api: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.sshd and self.api


def wait_until_ready(
    *,
    ssh_host: str = "127.0.0.1",
    ssh_port: int = 22,
    api_socket: str | None = API_SOCKET,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Waited:
    """Poll until sshd answers and (unless ``api_socket`` is None) the API socket exists."""
    start = clock()
    deadline = start + timeout
    sshd = api = False
    while True:
        sshd = sshd or sshd_answers(ssh_host, ssh_port, timeout=min(2.0, max(0.1, timeout)))
        api = api or api_socket is None or is_socket(api_socket)
        now = clock()
        if (sshd and api) or now >= deadline:
            return Waited(sshd, api, now - start)
        sleep(min(interval, max(0.0, deadline - now)))


def write_ready(port: str, message: bytes = READY_MESSAGE, timeout: float = 10.0) -> str:
    """Write ``message`` to the port. Returns "sent", "absent" (no such port) or an error text.

    Opened non-blocking so that a port nobody reads (a FIFO without a reader, a tty whose host side is
    not connected) cannot hang the boot; writes wait for the port to accept data up to ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(port, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
            break
        except FileNotFoundError:
            return "absent"
        except OSError as exc:
            # ENXIO: a FIFO (test stand-in) or a port without a reader yet; try again until the deadline.
            if exc.errno != errno.ENXIO or time.monotonic() >= deadline:
                return f"cannot open {port}: {exc.strerror}"
            time.sleep(0.05)
    try:
        view = memoryview(message)
        while view:
            try:
                n = os.write(fd, view)
                view = view[n:]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    return f"timed out writing to {port}"
                select.select([], [fd], [], left)
        return "sent"
    except OSError as exc:
        return f"cannot write to {port}: {exc.strerror}"
    finally:
        os.close(fd)


def api_service_enabled(root: RootFS) -> bool:
    """Whether rc will start the podman API service: ``podman_service_enable`` as load_rc_config sees it.

    load_rc_config reads /etc/rc.conf, /etc/rc.conf.local, then /etc/rc.conf.d/NAME and
    /usr/local/etc/rc.conf.d/NAME; the last assignment wins.
    """
    from fpvm.guest import rcconf

    values: dict[str, str | None] = {}
    for path in ("/etc/rc.conf", "/etc/rc.conf.local"):
        text = root.read_text(path)
        if text is not None:
            values.update(rcconf.parse(text))
    values.update(rcconf.read_values(root, "podman_service"))
    values.update(rcconf.read_values(root, "podman_service", "/usr/local/etc/rc.conf.d"))
    value = (values.get("podman_service_enable") or "").lower()
    return value in ("yes", "true", "on", "1")


def resolve_api_socket(root: RootFS, api_socket: str | None) -> str | None:
    """The host path to wait for (None: do not wait). ``auto`` follows ``api_service_enabled``."""
    if api_socket is None:
        return None
    if api_socket == AUTO:
        if not api_service_enabled(root):
            return None
        api_socket = API_SOCKET
    try:
        return str(root.host(api_socket, follow_last=True))
    except ValueError:
        return str(root.root) + api_socket


def signal_ready(
    *,
    port: str = READY_PORT,
    api_socket: str | None = AUTO,
    root: str = "/",
    ssh_host: str = "127.0.0.1",
    ssh_port: int = 22,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    log: Log,
) -> int:
    """Wait for sshd and the API socket, then write Ready; the exit status for ``fpvm guest ready``.

    ``api_socket`` is a guest path under ``root``, ``auto`` (wait only if podman_service is enabled)
    or None (do not wait for it).
    0: sent after both conditions held, or the port is absent (logged); 1: the deadline passed (Ready
    sent anyway) or the port could not be written.
    """
    from fpvm.guest.rootfs import RootFS

    api_socket = resolve_api_socket(RootFS(root), api_socket)
    waited = wait_until_ready(
        ssh_host=ssh_host,
        ssh_port=ssh_port,
        api_socket=api_socket,
        timeout=timeout,
        interval=interval,
    )
    status = 0
    if waited.ok:
        log.info(
            f"ready: sshd answers on {ssh_host}:{ssh_port}" + (f", {api_socket} exists" if api_socket else "")
        )
    else:
        missing = [] if waited.sshd else [f"sshd on {ssh_host}:{ssh_port}"]
        missing += [] if waited.api else [str(api_socket)]
        log.warn(
            f"ready: gave up after {waited.seconds:.0f} s waiting for {', '.join(missing)}; "
            "sending Ready anyway"
        )
        status = 1
    result = write_ready(port)
    if result == "sent":
        log.info(f"ready: wrote Ready to {port}")
    elif result == "absent":
        log.warn(f"ready: {port} does not exist (no virtio-serial port for podman); not signalled")
    else:
        log.warn(f"ready: {result}")
        status = 1
    return status


def ready_main(args: argparse.Namespace) -> int:
    """Handler of ``fpvm guest ready``."""
    from fpvm.guest.context import Log
    from fpvm.guest.rootfs import RootFS

    root = RootFS(args.root or "/")
    log = Log(echo=sys.stderr)
    try:
        return signal_ready(
            port=args.port or READY_PORT,
            api_socket=None if args.no_api_socket else args.api_socket or AUTO,
            root=str(root.root),
            ssh_host=args.ssh_host,
            ssh_port=args.ssh_port,
            timeout=args.timeout,
            interval=args.interval,
            log=log,
        )
    finally:
        try:
            log.flush(root)
        except OSError as exc:
            print(f"fpvm: cannot write the log under {root.root}: {exc}", file=sys.stderr)

