"""A simulated VM for a real podman client (4.3.1; 5.x with ``podman5=True``): users, stand-ins, sshd.

Layout (``base``, readable by the podman user, who owns most of it):

    base/home            HOME of the podman user (podman's config, machine JSON, ~/.ssh key)
    base/run             XDG_RUNTIME_DIR (0700)
    base/src/fpvm        a copy of fpvm's sources: the guest side runs on the system python3 with
                         the standard library only, as it will on FreeBSD
    base/standins        qemu.py, gvproxy.py, forced_command.py
    base/bin             qemu (wrapper), gvproxy (wrapper, found through helper_binaries_dir),
                         fpvm-record (``fpvm`` + ``--record``/``--root``, through standins/recording_shim.py,
                         whose recording runner answers ``sysctl -e dev.virtio_p9fs`` with the 9p devices
                         the stand-in qemu was given), forced-command; with ``podman5``: qemu-system-<arch>
                         (the stand-in qemu under the name podman 5 looks up) and virtiofsd (a stand-in)
    base/linux-compat    the launcher scripts from ``fpvm.guest.compat.launchers()``
    base/staged          the guest's root, provisioned by the agent inside the stand-in qemu
    base/out             records and logs (agent.jsonl, shims.jsonl, ssh.jsonl, vm.log, ...)
    base/sshd            sshd's config and host key (root-owned)

podman refuses to run as root, so it runs as ``USER`` through runuser with a clean environment.
The login user of the "guest" is the same user (``podman machine init --username USER``): its
Ignition entry then carries this user's uid and podman's key, and sshd (run as root on 127.0.0.1)
authenticates it with the authorized_keys file the agent wrote into the staged root. podman 5 also
logs in as ``root`` (its proxy script); sshd takes root's key from the staged ``/root/.ssh``, and the
forced command drops to ``USER`` at once: the guest's "root" owns nothing on the host.

With ``podman5=True`` the harness also has a small FreeBSD-looking disk (``freebsd.img``: a GPT with a
freebsd-ufs partition entry, which is what fpvm's podman helpers look for) and ``setup_helpers()``
runs ``fpvm podman-machine setup`` as ``USER``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fpvm.guest.compat import launchers

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "src" / "fpvm"
USER = "fpvm-contract"
MACHINE = "fbsd"
FREEBSD_UFS = "516e7cb6-6ecf-11d6-8ff8-00022d09712b"  # GPT partition type of a FreeBSD UFS file system


# A subset of FreeBSD 15's /etc/master.passwd and /etc/group (name, uid, gid, gecos, home, shell).
BASE_USERS = [
    ("root", 0, 0, "Charlie &", "/root", "/bin/sh"),
    ("daemon", 1, 1, "Owner of many system processes", "/root", "/usr/sbin/nologin"),
    ("operator", 2, 5, "System &", "/", "/usr/sbin/nologin"),
    ("nobody", 65534, 65534, "Unprivileged user", "/nonexistent", "/usr/sbin/nologin"),
]
BASE_GROUPS = ["wheel:*:0:root", "daemon:*:1:", "operator:*:5:root", "nogroup:*:65533:", "nobody:*:65534:"]


def system_python() -> str:
    """An interpreter every user can run, without the test venv's packages (the guest has none)."""
    for cand in ("/usr/bin/python3", os.path.realpath(sys.executable)):
        if os.access(cand, os.X_OK):
            return cand
    raise RuntimeError("no python3 usable by an unprivileged user")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_user(name: str, home: Path) -> pwd.struct_passwd:
    """The unprivileged podman user (created once; home and an unlocked password field every run)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", "--home-dir", str(home), name],
            check=True,
        )
    # '*' (no password) rather than useradd's '!' (locked): OpenSSH refuses key logins for locked accounts.
    subprocess.run(
        ["usermod", "--home", str(home), "--password", "*", "--shell", "/bin/sh", name], check=True
    )
    return pwd.getpwnam(name)


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


@dataclass
class Harness:
    base: Path
    user: pwd.struct_passwd
    python: str
    sshd_port: int = 0
    sshd: subprocess.Popen[bytes] | None = None
    results: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    podman_cmd: str = "podman"
    podman5: bool = False

    # -- paths ------------------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.base / "home"

    @property
    def runtime(self) -> Path:
        return self.base / "run"

    @property
    def staged(self) -> Path:
        return self.base / "staged"

    @property
    def out(self) -> Path:
        return self.base / "out"

    def cfg(self) -> dict[str, str | int]:
        return {
            "python": self.python,
            "src": str(self.base / "src"),
            "staged": str(self.staged),
            "launchers": str(self.base / "linux-compat"),
            "agent_record": str(self.out / "agent.jsonl"),
            "agent_status": str(self.out / "agent-status.json"),
            "shim_record": str(self.out / "shims.jsonl"),
            "ssh_log": str(self.out / "ssh.jsonl"),
            "log": str(self.out / "vm.log"),
            "qemu_args": str(self.out / "qemu-args.json"),
            "gvproxy_args": str(self.out / "gvproxy-args.json"),
            "pids": str(self.out / "pids"),
            "p9_devices": str(self.out / "p9-devices.json"),
            "virtiofsd_args": str(self.out / "virtiofsd-args.jsonl"),
            "guest_uid": self.user.pw_uid,
            "guest_gid": self.user.pw_gid,
            "sshd_port": self.sshd_port,
        }

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, podman: str = "podman", podman5: bool = False) -> Harness:
        """A fresh simulated VM; ``podman`` is the client to run, ``podman5`` adds what 5.x looks up."""
        base = Path(tempfile.mkdtemp(prefix="fpvm-contract-", dir="/tmp"))
        base.chmod(0o755)
        user = ensure_user(USER, base / "home")
        h = cls(base, user, system_python(), podman_cmd=podman, podman5=podman5)
        h.sshd_port = free_port()
        h._layout()
        return h

    def _layout(self) -> None:
        b, py = self.base, self.python
        shutil.copytree(SRC, b / "src" / "fpvm", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(HERE / "standins", b / "standins", ignore=shutil.ignore_patterns("__pycache__"))
        for d in ("home", "run", "staged", "out", "share-rw", "share-ro"):
            (b / d).mkdir(exist_ok=True)
        (b / "run").chmod(0o700)
        cfg_path = b / "harness.json"
        write(cfg_path, json.dumps(self.cfg(), indent=1))
        src = b / "src"
        write(b / "bin" / "qemu", f'#!/bin/sh\nexec {py} {b}/standins/qemu.py {cfg_path} "$@"\n', 0o755)
        write(b / "bin" / "gvproxy", f'#!/bin/sh\nexec {py} {b}/standins/gvproxy.py {cfg_path} "$@"\n', 0o755)
        write(
            b / "bin" / "forced-command",
            f"#!/bin/sh\nPYTHONPATH={src} exec {py} {b}/standins/forced_command.py {cfg_path}\n",
            0o755,
        )
        # `fpvm guest shim NAME ARGS` -> `fpvm guest shim --record F --root STAGED NAME ARGS`
        write(
            b / "bin" / "fpvm-record",
            "#!/bin/sh\n"
            "a=$1 b=$2; shift 2\n"
            f'PYTHONPATH={src} exec {py} {b}/standins/recording_shim.py {cfg_path} "$a" "$b" '
            f'--record {self.out}/shims.jsonl --root {self.staged} "$@"\n',
            0o755,
        )
        if self.podman5:
            arch = {"arm64": "aarch64", "amd64": "x86_64"}.get(os.uname().machine, os.uname().machine)
            for name, standin in ((f"qemu-system-{arch}", "qemu.py"), ("virtiofsd", "virtiofsd.py")):
                text = f'#!/bin/sh\nexec {py} {b}/standins/{standin} {cfg_path} "$@"\n'
                write(b / "bin" / name, text, 0o755)
            freebsd_disk(b / "freebsd.img")
        for name, text in launchers(fpvm=str(b / "bin" / "fpvm-record")).items():
            write(b / "linux-compat" / name, text, 0o755)
        write(
            b / "home" / ".config" / "containers" / "containers.conf",
            f'[engine]\nhelper_binaries_dir = ["{b}/bin"]\n',
        )
        self._seed_guest_root()
        # a raw "disk": podman copies it and runs qemu-img info/resize on the copy
        with open(b / "fake.img", "wb") as fh:
            fh.truncate(1 << 20)
        uid, gid = self.user.pw_uid, self.user.pw_gid
        for path in [b, *b.rglob("*")]:
            os.lchown(path, uid, gid)
        self._sshd_files()

    def _seed_guest_root(self) -> None:
        """The accounts FreeBSD's base system ships (etc/master.passwd, etc/group): root lives in /root."""
        etc = self.staged / "etc"
        write(
            etc / "master.passwd",
            "".join(f"{n}:*:{u}:{g}::0:0:{c}:{h}:{s}\n" for n, u, g, c, h, s in BASE_USERS),
            0o600,
        )
        write(etc / "passwd", "".join(f"{n}:*:{u}:{g}:{c}:{h}:{s}\n" for n, u, g, c, h, s in BASE_USERS))
        write(etc / "group", "".join(f"{line}\n" for line in BASE_GROUPS))
        (self.staged / "root").mkdir(mode=0o700)

    def _sshd_files(self) -> None:
        d = self.base / "sshd"
        d.mkdir(mode=0o755)
        os.chown(d, 0, 0)
        key = d / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        write(
            d / "sshd_config",
            "\n".join(
                [
                    f"Port {self.sshd_port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {key}",
                    f"PidFile {d}/sshd.pid",
                    # The keys podman's Ignition asked for, as the agent wrote them into the guest root.
                    f"AuthorizedKeysFile {self.staged}/home/%u/.ssh/authorized_keys",
                    "StrictModes no",  # the staged root lives under /tmp (world-writable parent)
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    # podman 5 runs its proxy script as root: root's key is the one the agent wrote
                    # into the staged /root (the Match block below); the forced command drops to USER.
                    "PermitRootLogin prohibit-password",
                    f"AllowUsers {self.user.pw_name} root",
                    f"ForceCommand {self.base}/bin/forced-command",
                    "AllowTcpForwarding no",
                    "X11Forwarding no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "MaxStartups 100",
                    "LogLevel VERBOSE",
                    "Match User root",
                    f"    AuthorizedKeysFile {self.staged}/root/.ssh/authorized_keys",
                    "",
                ]
            ),
        )

    # -- processes --------------------------------------------------------------------------------
    def start_sshd(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        d = self.base / "sshd"
        log = open(self.out / "sshd.log", "wb")  # noqa: SIM115 - lives as long as sshd
        self.sshd = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.sshd_port), 0.2):
                return
            if self.sshd.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("sshd did not start:\n" + (self.out / "sshd.log").read_text())

    def env(self) -> list[str]:
        return [
            f"HOME={self.home}",
            f"XDG_RUNTIME_DIR={self.runtime}",
            f"USER={self.user.pw_name}",
            f"LOGNAME={self.user.pw_name}",
            "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "LC_ALL=C.UTF-8",
        ]

    def as_user(
        self, argv: list[str], timeout: float = 90, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as the podman user in a process group of its own (killed whole on timeout).

        Under standins/subreaper.py: what podman leaves running (gvproxy, QEMU) is reaped the moment
        it exits, as by a host's init (podman 5's stop checks that gvproxy is gone within ~250 ms).
        """
        cmd = ["runuser", "-u", self.user.pw_name, "--", "env", "-i", *self.env(), *argv]
        proc = subprocess.Popen(
            [self.python, str(HERE / "standins" / "subreaper.py"), *cmd],
            cwd=self.base,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            err += f"\n[contract test: killed after {timeout} s]"
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def podman(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return self.as_user([self.podman_cmd, *args], timeout=timeout)

    def setup_helpers(self) -> subprocess.CompletedProcess[str]:
        """``fpvm podman-machine setup`` as the podman user (fpvm's sources, the system python3)."""
        return self.as_user(
            ["env", f"PYTHONPATH={self.base / 'src'}", self.python, "-m", "fpvm", "podman-machine", "setup"]
        )

    def machine_json(self) -> Path:
        return self.home / ".config" / "containers" / "podman" / "machine" / "qemu" / f"{MACHINE}.json"

    def use_standin_qemu(self) -> None:
        """Point the machine's CmdLine at the stand-in, keeping podman's arguments (and a backup)."""
        path = self.machine_json()
        text = path.read_text(encoding="utf-8")
        write(path.with_suffix(".json.orig"), text, 0o600)
        data = json.loads(text)
        data["CmdLine"][0] = str(self.base / "bin" / "qemu")
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")  # keeps the user's ownership

    def logs(self) -> str:
        parts = []
        for name in ("vm.log", "ssh.jsonl", "shims.jsonl", "sshd.log"):
            p = self.out / name
            if p.exists():
                parts.append(f"--- {name}\n{p.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.podman("machine", "rm", "-f", MACHINE, timeout=30)
        # stand-ins podman started and that are still alive (by the pids they wrote), then sshd
        for pidfile in [*self.runtime.glob("podman/*.pid"), *self.out.glob("pids/*")]:
            with contextlib.suppress(ValueError, OSError):
                pid = int(pidfile.read_text().strip())
                if _owned_by(pid, self.user.pw_uid):
                    os.kill(pid, signal.SIGTERM)
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sshd.wait(5)
        shutil.rmtree(self.base, ignore_errors=True)


def freebsd_disk(path: Path) -> None:
    """A 1 MiB raw disk: protective MBR, a GPT header at LBA 1 and one freebsd-ufs partition entry."""
    data = bytearray(1 << 20)
    data[446 + 4] = 0xEE
    data[510:512] = b"\x55\xaa"
    data[512:520] = b"EFI PART"
    data[512 + 72 : 512 + 88] = struct.pack("<QII", 2, 128, 128)
    data[1024 : 1024 + 16] = uuid.UUID(FREEBSD_UFS).bytes_le
    path.write_bytes(bytes(data))


def _owned_by(pid: int, uid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}").st_uid == uid
    except OSError:
        return False
