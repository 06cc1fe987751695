"""fpvm's ``qemu-system-*`` and ``virtiofsd`` for podman >= 5.2 (qemu provider, Linux host).

podman 5.2+ shares a machine's folders with virtio-fs: per volume it starts ``virtiofsd --sandbox none
--socket-path SOCK --shared-dir . --seccomp=none`` in the source folder, waits until SOCK exists, and
gives QEMU ``-chardev socket,id=C,path=SOCK -device vhost-user-fs-pci,...,chardev=C,tag=T`` (T = the first
36 hex digits of sha256(target)); then it runs ``mount -t virtiofs T TARGET`` in the guest. FreeBSD has no
virtio-fs driver, so for a FreeBSD machine these helpers offer each folder as a virtio-9p device instead,
which the guest's ``mount`` shim mounts with p9fs(4):

* ``virtiofsd``: when the machine podman is starting (the one machine file with ``"Starting": true``
  that shares the current folder) boots a FreeBSD disk, it stands in for virtiofsd: records the shared
  folder for SOCK (``SOCK.fpvm.json``), listens on SOCK, and lives as long as QEMU stays connected, like
  virtiofsd. Otherwise it execs the real virtiofsd with its argv, environment and folder unchanged.
* ``qemu-system-*``: when the ``-drive`` disk is a FreeBSD disk (GPT with FreeBSD partitions, or an
  MBR FreeBSD slice; raw or qcow2), each ``vhost-user-fs-pci`` device becomes ``-fsdev local`` +
  ``virtio-9p-pci`` with mount_tag = T cut to QEMU's 31-byte limit (the guest matches the cut tag),
  read-only when the machine's mount is; the ``-chardev`` stays, so QEMU keeps the stand-in's socket
  open. Every other command line is exec'd unchanged, byte for byte.

The real binaries are looked up as podman would, skipping this folder: ``CONTAINERS_HELPER_BINARY_DIR``,
the helper folders configured before fpvm's (``helpers.json``), then PATH.

This file is copied as is into the helper folder by ``fpvm podman-machine setup`` and run by the
system's python3: standard library only, no fpvm imports, Python 3.8+.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
import time
import uuid

HELPERS_JSON = "helpers.json"
LOG_NAME = "helpers.log"
LOG_LIMIT = 256 * 1024
STATE_SUFFIX = ".fpvm.json"
MAX_9P_TAG = 31  # QEMU: "mount tag ... is longer than maximum (31 bytes)"
ACCEPT_TIMEOUT = 600.0  # a stand-in virtiofsd whose QEMU never came gives up (virtiofsd would wait forever)
FREEBSD_GPT_TYPES = {
    uuid.UUID("83bd6b9d-7f41-11dc-be0b-001560b84f0f"),  # freebsd-boot
    uuid.UUID("516e7cb4-6ecf-11d6-8ff8-00022d09712b"),  # freebsd (disklabel)
    uuid.UUID("516e7cb5-6ecf-11d6-8ff8-00022d09712b"),  # freebsd-swap
    uuid.UUID("516e7cb6-6ecf-11d6-8ff8-00022d09712b"),  # freebsd-ufs
    uuid.UUID("516e7cb8-6ecf-11d6-8ff8-00022d09712b"),  # freebsd-vinum
    uuid.UUID("516e7cba-6ecf-11d6-8ff8-00022d09712b"),  # freebsd-zfs
}
MBR_FREEBSD = 0xA5


# -- QEMU option strings ------------------------------------------------------------------------------
def split_opts(text: str) -> list[str]:
    """``a=1,b=x,,y`` -> ``["a=1", "b=x,y"]`` (QEMU writes a comma inside a value as ``,,``)."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == ",":
            if text[i + 1 : i + 2] == ",":
                cur.append(",")
                i += 2
                continue
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def opts_dict(text: str, implied: str = "") -> dict[str, str]:
    """Key/value pairs of an option string; a first item without ``=`` is the ``implied`` key."""
    out: dict[str, str] = {}
    for n, part in enumerate(split_opts(text)):
        key, eq, value = part.partition("=")
        if not eq and n == 0 and implied:
            out[implied] = key
        elif eq:
            out[key] = value
    return out


def escape(value: str) -> str:
    return value.replace(",", ",,")


# -- is it a FreeBSD disk? ----------------------------------------------------------------------------
class _Disk:
    """Reads guest bytes of a raw or qcow2 (v2/v3, uncompressed clusters, no backing file) image."""

    def __init__(self, fh: object) -> None:
        self.fh = fh
        self.qcow: tuple[int, int, int] | None = None  # (cluster_bits, l1_size, l1_offset)
        head = self._pread(0, 72)
        if head[:4] == b"QFI\xfb" and len(head) >= 48:
            (cluster_bits,) = struct.unpack(">I", head[20:24])
            (l1_size,) = struct.unpack(">I", head[36:40])
            (l1_offset,) = struct.unpack(">Q", head[40:48])
            if 9 <= cluster_bits <= 21:
                self.qcow = (cluster_bits, l1_size, l1_offset)

    def _pread(self, offset: int, length: int) -> bytes:
        self.fh.seek(offset)  # type: ignore[attr-defined]
        data: bytes = self.fh.read(length)  # type: ignore[attr-defined]
        return data

    def read(self, offset: int, length: int) -> bytes:
        if self.qcow is None:
            return self._pread(offset, length)
        bits, l1_size, l1_offset = self.qcow
        size = 1 << bits
        out = b""
        while length > 0:
            cluster, within = divmod(offset, size)
            n = min(length, size - within)
            l1_index, l2_index = divmod(cluster, size // 8)
            data = b"\0" * n
            if l1_index < l1_size:
                (l2,) = struct.unpack(">Q", self._pread(l1_offset + 8 * l1_index, 8).ljust(8, b"\0"))
                l2 &= 0x00FFFFFFFFFFFE00
                if l2:
                    (entry,) = struct.unpack(">Q", self._pread(l2 + 8 * l2_index, 8).ljust(8, b"\0"))
                    host = entry & 0x00FFFFFFFFFFFE00
                    if entry & (1 << 62):
                        raise ValueError("compressed qcow2 cluster")
                    if host:
                        data = self._pread(host + within, n).ljust(n, b"\0")
            out += data
            offset += n
            length -= n
        return out


def is_freebsd_disk(path: str) -> bool:
    """True when the disk image has a FreeBSD GPT partition or MBR slice (fpvm's images have both)."""
    try:
        with open(path, "rb") as fh:
            disk = _Disk(fh)
            mbr = disk.read(0, 512)
            gpt = disk.read(512, 512)
            if gpt[:8] == b"EFI PART":
                (entries_lba,) = struct.unpack("<Q", gpt[72:80])
                count, entry_size = struct.unpack("<II", gpt[80:88])
                count = min(count, 256)
                if 128 <= entry_size <= 4096:
                    table = disk.read(entries_lba * 512, count * entry_size)
                    for i in range(count):
                        raw = table[i * entry_size : i * entry_size + 16]
                        if len(raw) == 16 and uuid.UUID(bytes_le=raw) in FREEBSD_GPT_TYPES:
                            return True
                return False
            if mbr[510:512] == b"\x55\xaa":
                return any(mbr[446 + 16 * i + 4] == MBR_FREEBSD for i in range(4))
    except (OSError, ValueError, struct.error):
        return False
    return False


# -- podman's machine files ---------------------------------------------------------------------------
def machine_config_dir() -> str:
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(xdg, "containers", "podman", "machine", "qemu")


def load_json(path: str) -> dict[str, object] | None:
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def mounts_of(machine: dict[str, object]) -> list[dict[str, object]]:
    mounts = machine.get("Mounts")
    return [m for m in mounts if isinstance(m, dict)] if isinstance(mounts, list) else []


def image_of(machine: dict[str, object]) -> str:
    image = machine.get("ImagePath")
    return str(image.get("Path") or "") if isinstance(image, dict) else ""


def same_dir(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def starting_machine(shared: str) -> dict[str, object] | None:
    """The machine podman is starting (qemu starts one at a time) that shares ``shared``."""
    found = []
    try:
        names = sorted(os.listdir(machine_config_dir()))
    except OSError:
        return None
    for name in names:
        if not name.endswith(".json"):
            continue
        data = load_json(os.path.join(machine_config_dir(), name))
        if data is None or data.get("Starting") is not True:
            continue
        if any(same_dir(str(m.get("Source") or ""), shared) for m in mounts_of(data)):
            found.append(data)
    return found[0] if len(found) == 1 else None


# -- the real binaries --------------------------------------------------------------------------------
def own_dir() -> str:
    return os.path.dirname(os.path.realpath(__file__))


def search_dirs(here: str) -> list[str]:
    """podman's order without this folder: the helper folders configured at setup, then PATH."""
    conf = load_json(os.path.join(here, HELPERS_JSON)) or {}
    dirs = conf.get("search_dirs")
    out = [str(d) for d in dirs] if isinstance(dirs, list) else []
    env = os.environ.get("CONTAINERS_HELPER_BINARY_DIR")
    if env:
        out.insert(0, env)
    out += [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    return out


def find_real(name: str, here: str) -> str | None:
    for d in search_dirs(here):
        if d.startswith("$BINDIR"):
            continue
        path = os.path.join(d, name)
        if os.path.isfile(path) and os.access(path, os.X_OK) and not same_dir(os.path.dirname(path), here):
            return path
    return None  # podman would not have found one either (it looks nowhere else)


def log(here: str, line: str) -> None:
    """One line per decision in helpers.log (``fpvm podman-machine doctor`` shows the last ones)."""
    path = os.path.join(here, LOG_NAME)
    try:
        if os.path.getsize(path) > LOG_LIMIT:  # one line per start: keep the file small
            os.replace(path, path + ".old")
    except OSError:
        pass
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + line + "\n")
    except OSError:
        pass


def original_environ() -> dict[bytes, bytes]:
    """The environment this process was started with (/proc/self/environ: what podman passed).

    python3 may have changed its own (PEP 538 sets LC_CTYPE when the locale is C); the real binary
    gets the original, byte for byte.
    """
    try:
        with open("/proc/self/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return dict(os.environb)
    env: dict[bytes, bytes] = {}
    for item in raw.split(b"\0"):
        key, eq, value = item.partition(b"=")
        if eq and key not in env:
            env[key] = value
    return env


def exec_real(role: str, argv: list[str], here: str) -> int:  # returns only when nothing was found
    """Replace this process with the real binary: argv (including argv[0]), environment and cwd as given."""
    real = find_real(role, here)
    if real is None:
        print(
            f"fpvm's {role} helper: no real {role} found (searched {', '.join(search_dirs(here))}); "
            "install it, or run `fpvm podman-machine teardown`",
            file=sys.stderr,
        )
        return 127
    os.execve(real, argv, original_environ())


# -- virtiofsd ----------------------------------------------------------------------------------------
def virtiofsd_args(args: list[str]) -> tuple[str | None, str | None]:
    """(--socket-path, --shared-dir) in either ``--opt value`` or ``--opt=value`` form."""
    found: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        for key in ("--socket-path", "--shared-dir"):
            if a == key and i + 1 < len(args):
                found[key] = args[i + 1]
                i += 1
            elif a.startswith(key + "="):
                found[key] = a[len(key) + 1 :]
        i += 1
    return found.get("--socket-path"), found.get("--shared-dir")


def state_path(sock: str) -> str:
    return sock + STATE_SUFFIX


def write_state(sock: str, data: dict[str, object]) -> None:
    path = state_path(sock)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def serve_stand_in(
    sock: str, shared: str, here: str, timeout: float = ACCEPT_TIMEOUT, error: str = ""
) -> int:
    """Be virtiofsd for a FreeBSD machine: announce the folder, listen, live while QEMU is connected.

    With ``error`` (no real virtiofsd for another machine) the socket only lets podman go on (it waits
    for the path forever); the qemu helper then refuses to start with that message, which podman shows.
    """

    def cleanup(*_: object) -> None:
        for path in (sock, state_path(sock)):
            with contextlib.suppress(OSError):
                os.unlink(path)

    def stop(*_: object) -> None:
        cleanup()
        os._exit(0)

    with contextlib.suppress(OSError):
        os.unlink(sock)  # a socket left by an earlier run
    state: dict[str, object] = {"socket": sock, "shared_dir": shared, "pid": os.getpid()}
    if error:
        state["error"] = error
    write_state(sock, state)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # live as long as QEMU, not as the terminal
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        srv.bind(sock)  # podman waits for this path to exist, then starts QEMU
        srv.listen(1)
        srv.settimeout(timeout)
        try:
            conn, _ = srv.accept()
        except OSError:  # socket.timeout (an OSError) when no QEMU came
            log(here, f"virtiofsd {sock}: no QEMU connected within {timeout:.0f} s; exiting")
            return 0
        srv.close()
        with conn:
            while conn.recv(65536):  # QEMU sends nothing on an unused chardev; EOF when it exits
                pass
        return 0
    finally:
        srv.close()
        cleanup()


def virtiofsd_main(argv: list[str], here: str) -> int:
    sock, shared_arg = virtiofsd_args(argv[1:])
    cwd = os.getcwd()
    shared = os.path.realpath(os.path.join(cwd, shared_arg)) if shared_arg is not None else None
    machine = starting_machine(shared) if shared else None
    disk = image_of(machine) if machine else ""
    if sock and shared and machine is not None and disk and is_freebsd_disk(disk):
        if not os.path.isdir(shared):
            print(f"fpvm's virtiofsd helper: {shared} is not a folder", file=sys.stderr)
            return 1
        log(here, f"virtiofsd {sock}: FreeBSD machine {machine.get('Name')}: stand-in for {shared}")
        return serve_stand_in(sock, shared, here)
    why = "no machine is starting with this folder" if machine is None else f"machine {machine.get('Name')}"
    if sock and shared and find_real("virtiofsd", here) is None:
        # podman would wait for the socket forever: serve it, and let the qemu helper say what is wrong
        error = (
            f"fpvm's virtiofsd helper found no real virtiofsd for {shared} ({why}); install virtiofsd "
            "(Debian/Ubuntu/Fedora: package virtiofsd)"
        )
        log(here, f"virtiofsd {sock}: {error}")
        return serve_stand_in(sock, shared, here, error=error)
    log(here, f"virtiofsd {sock}: real virtiofsd ({why})")
    return exec_real("virtiofsd", argv, here)


# -- qemu ---------------------------------------------------------------------------------------------
def option_values(argv: list[str], option: str) -> list[tuple[int, str]]:
    """(index of the value, value) of every ``option VALUE`` pair (QEMU also takes ``--option``)."""
    out = []
    for i, a in enumerate(argv[:-1]):
        if a in (option, "-" + option):
            out.append((i + 1, argv[i + 1]))
    return out


def disk_of(argv: list[str]) -> str | None:
    for _, value in option_values(argv, "-drive"):
        f = opts_dict(value).get("file")
        if f:
            return f
    return None


def machine_of(argv: list[str]) -> dict[str, object] | None:
    """podman keeps NAME.ign beside NAME.json: the fw_cfg Ignition file names the machine file."""
    for _, value in option_values(argv, "-fw_cfg"):
        o = opts_dict(value)
        ign = o.get("file", "")
        if o.get("name") == "opt/com.coreos/config" and ign.endswith(".ign"):
            return load_json(ign[: -len(".ign")] + ".json")
    return None


class RewriteError(Exception):
    pass


def rewrite_qemu(argv: list[str]) -> list[str] | None:
    """The 9p command line for a FreeBSD machine with virtio-fs devices; None: run argv unchanged."""
    devices = [
        (i, v)
        for i, v in option_values(argv, "-device")
        if opts_dict(v, "driver").get("driver") == "vhost-user-fs-pci"
    ]
    if not devices:
        return None
    disk = disk_of(argv)
    if not disk or not is_freebsd_disk(disk):
        return None
    chardevs = {}
    for _, value in option_values(argv, "-chardev"):
        o = opts_dict(value, "backend")
        if o.get("backend") == "socket" and o.get("id") and o.get("path"):
            chardevs[o["id"]] = o["path"]
    machine = machine_of(argv) or {}
    by_tag = {str(m.get("Tag")): m for m in mounts_of(machine)}
    out = list(argv)
    for n, (i, value) in reversed(list(enumerate(devices))):
        o = opts_dict(value, "driver")
        tag, chardev = o.get("tag", ""), o.get("chardev", "")
        sock = chardevs.get(chardev, "")
        state = load_json(state_path(sock)) if sock else None
        mount = by_tag.get(tag, {})
        source = str((state or {}).get("shared_dir") or mount.get("Source") or "")
        if not tag or not source or not os.path.isdir(source):
            raise RewriteError(
                f"cannot find the host folder of virtio-fs tag {tag!r} (socket {sock or '?'}): "
                "neither fpvm's virtiofsd stand-in nor the machine file names it"
            )
        fsdev = f"fpvmfs{n}"
        spec = f"local,id={fsdev},path={escape(source)},security_model=none"
        if mount.get("ReadOnly") is True:
            spec += ",readonly=on"
        device = f"virtio-9p-pci,fsdev={fsdev},mount_tag={tag[:MAX_9P_TAG]}"
        out[i - 1 : i + 1] = ["-fsdev", spec, "-device", device]
    return out


def stand_in_errors(argv: list[str]) -> list[str]:
    """Messages of live virtiofsd stand-ins (state files) that had no real virtiofsd to run."""
    out = []
    for _, value in option_values(argv, "-chardev"):
        o = opts_dict(value, "backend")
        state = load_json(state_path(o["path"])) if o.get("backend") == "socket" and o.get("path") else None
        pid = state.get("pid") if state else None
        if state and state.get("error") and isinstance(pid, int):
            try:
                os.kill(pid, 0)
            except OSError:
                continue  # left by a stand-in that is gone
            out.append(str(state["error"]))
    return out


def qemu_main(role: str, argv: list[str], here: str) -> int:
    try:
        new = rewrite_qemu(argv)
    except RewriteError as exc:
        print(f"fpvm's {role} helper: {exc}", file=sys.stderr)
        log(here, f"{role}: {exc}")
        return 1
    errors = stand_in_errors(argv) if new is None else []
    if errors:
        for error in errors:
            print(error, file=sys.stderr)
        log(here, f"{role}: not started: " + "; ".join(errors))
        return 1
    if new is None:
        log(here, f"{role}: unchanged command line")
        return exec_real(role, argv, here)
    log(here, f"{role}: FreeBSD disk {disk_of(argv)}: virtio-fs devices offered as virtio-9p")
    return exec_real(role, new, here)


def main(role: str, argv: list[str]) -> int:
    """Run as ``role`` (``virtiofsd`` or ``qemu-system-*``) with podman's ``argv`` (argv[0] included)."""
    here = own_dir()
    if role == "virtiofsd":
        return virtiofsd_main(argv, here)
    return qemu_main(role, argv, here)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[1:]))
