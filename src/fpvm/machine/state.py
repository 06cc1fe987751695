"""Where a machine lives on the host, and what is remembered about it.

Persistent things (disk, key, Ignition config, console log, ``machine.json``) go in the per-machine data
directory, so they survive reboots. Sockets and the pid file go in a short runtime directory: a unix
socket path is limited to about 104 bytes, which ``~/Library/Application Support/...`` can exceed, and
runtime files left by a crash or a reboot must be recognised as stale rather than trusted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from fpvm.fsutil import atomic_write
from fpvm.machine.errors import MachineError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
STATE_FILE = "machine.json"
DISK_FILE = "disk.img"
KEY_FILE = "id_ed25519"
CONFIG_FILE = "config.ign"
CONSOLE_LOG = "console.log"
QEMU_LOG = "qemu.log"
KNOWN_HOSTS = "known_hosts"
EFI_VARS = "efi-vars.fd"


def data_home() -> Path:
    """``$XDG_DATA_HOME`` when set (any OS, handy for tests), else the platform's usual place."""
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support"
    return Path.home() / ".local" / "share"


def podman_config_home() -> Path:
    """Where podman reads its configuration on every OS: ``$XDG_CONFIG_HOME`` or ``~/.config``."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return Path(xdg) if xdg else Path.home() / ".config"


def machines_root() -> Path:
    return data_home() / "fpvm" / "machines"


def runtime_root() -> Path:
    """Short, per-user, cleared at reboot: ``$XDG_RUNTIME_DIR/fpvm`` or ``$TMPDIR/fpvm-UID``."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "fpvm"
    return Path(tempfile.gettempdir()) / f"fpvm-{os.getuid()}"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise MachineError(
            f"invalid machine name {name!r}: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 63 characters)"
        )
    return name


@dataclasses.dataclass
class Volume:
    """A host folder shared with the guest over 9p; ``tag`` is what QEMU and the guest agree on."""

    source: str
    target: str
    readonly: bool
    tag: str


@dataclasses.dataclass
class Machine:
    """What ``fpvm machine init`` decided; everything else is derived from it."""

    name: str
    arch: str
    cpus: int
    memory: int  # MiB
    disk_size: int  # GiB
    disk_format: str  # raw | qcow2
    ssh_port: int
    uid: int
    image_source: str
    created: str
    volumes: list[Volume] = dataclasses.field(default_factory=list)
    default_connection: bool = False

    @property
    def dir(self) -> Path:
        return machines_root() / self.name

    @property
    def connection(self) -> str:
        return f"fpvm-{self.name}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Machine:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["volumes"] = [Volume(**v) for v in data.get("volumes", [])]
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Paths:
    """Every file of one machine, persistent and runtime."""

    dir: Path
    run: Path

    @classmethod
    def of(cls, name: str) -> Paths:
        return cls(machines_root() / name, runtime_root() / name)

    @property
    def state(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def disk(self) -> Path:
        return self.dir / DISK_FILE

    @property
    def key(self) -> Path:
        return self.dir / KEY_FILE

    @property
    def config(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def console_log(self) -> Path:
        return self.dir / CONSOLE_LOG

    @property
    def qemu_log(self) -> Path:
        return self.dir / QEMU_LOG

    @property
    def known_hosts(self) -> Path:
        return self.dir / KNOWN_HOSTS

    @property
    def efi_vars(self) -> Path:
        return self.dir / EFI_VARS

    @property
    def qmp(self) -> Path:
        return self.run / "qmp.sock"

    @property
    def ready(self) -> Path:
        return self.run / "ready.sock"

    @property
    def console(self) -> Path:
        return self.run / "console.sock"

    @property
    def gvproxy_sock(self) -> Path:
        return self.run / "gvproxy.sock"

    @property
    def pidfile(self) -> Path:
        return self.run / "qemu.pid"

    @property
    def gvproxy_pidfile(self) -> Path:
        return self.run / "gvproxy.pid"

    def runtime_files(self) -> list[Path]:
        return [
            self.qmp,
            self.ready,
            self.console,
            self.gvproxy_sock,
            self.pidfile,
            self.gvproxy_pidfile,
        ]


def names() -> list[str]:
    root = machines_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if NAME_RE.match(p.name) and (p / STATE_FILE).is_file())


def load(name: str) -> Machine:
    check_name(name)
    path = Paths.of(name).state
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise MachineError(f"no machine named {name!r} (see `fpvm machine list`)") from None
    except (OSError, ValueError) as exc:
        raise MachineError(f"cannot read {path}: {exc}") from None
    try:
        return Machine.from_json(data)
    except (TypeError, KeyError) as exc:
        raise MachineError(f"{path} is not an fpvm machine state file: {exc}") from None


def save(machine: Machine, directory: Path | None = None) -> None:
    target = (directory or machine.dir) / STATE_FILE
    atomic_write(target, (json.dumps(machine.to_json(), indent=2) + "\n").encode(), mode=0o600)


# -- liveness of what a previous run left behind ---------------------------------------------------


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs; reaps it first if it is our own exited child (tests start VMs in-process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def socket_listening(path: Path, timeout: float = 1.0) -> bool:
    """A unix socket file can outlive its server; only a successful connect proves someone listens."""
    if not path.exists():
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
    except OSError:
        return False
    finally:
        s.close()
    return True


def vm_pid(paths: Paths) -> int | None:
    """The QEMU pid when the VM really runs: the pid is alive and its QMP socket answers.

    Checking both guards against pid reuse after a reboot (a live unrelated process with the old pid).
    """
    pid = read_pid(paths.pidfile)
    if pid is None or not pid_alive(pid):
        return None
    if not socket_listening(paths.qmp):
        return None
    return pid


def clean_stale(paths: Paths) -> list[Path]:
    """Remove runtime files of a VM that no longer runs; returns what was removed."""
    removed: list[Path] = []
    gv = read_pid(paths.gvproxy_pidfile)
    if gv is not None and pid_alive(gv):
        # gvproxy outliving its VM would hold the ssh port: it is ours, stop it.
        with contextlib.suppress(OSError):
            os.kill(gv, 15)
    for path in paths.runtime_files():
        if path.exists() or path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path)
    return removed
