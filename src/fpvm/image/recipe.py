"""The image recipe: one declarative settings table, in the manner of mkosi's ``SETTINGS``.

Every knob of ``fpvm build`` is a row of ``SETTINGS``; the command-line options, the defaults and the
documentation in docs/image.md come from these rows, so the three never drift apart. The package lists
and the guest configuration (what goes into ``rc.conf.d``, ``loader.conf.d`` ...) are data too, kept
here so that every builder (pkgbase, builder-vm, poudriere) installs exactly the same thing.

Package names are FreeBSD's own: pkgbase names from ``release/packages/ucl/*-all.ucl`` in freebsd-src
(``set = minimal`` or ``optional``), ports names from the ports tree (``sysutils/podman-suite`` ...).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fpvm import arch as archmod
from fpvm.contract import API_SOCKET

DEFAULT_RELEASE = "15.1-RELEASE"
METHODS: tuple[str, ...] = ("pkgbase", "builder-vm", "poudriere")
FORMATS: tuple[str, ...] = ("raw", "qcow2", "vhdx")  # vhdx: podman's hyperv provider (Windows)
COMPRESSIONS: tuple[str, ...] = ("zst", "xz", "none")
ACCELS: tuple[str, ...] = ("auto", "kvm", "hvf", "tcg")
FILESYSTEMS: tuple[str, ...] = ("zfs", "ufs")
DEFAULT_FS = "zfs"

_RELEASE_RE = re.compile(r"^(?P<major>\d+)\.(?P<minor>\d+)-RELEASE$")


class RecipeError(ValueError):
    """A setting the recipe cannot build."""


@dataclass(frozen=True)
class Release:
    """A FreeBSD release name split into the numbers pkg repositories and download URLs use."""

    name: str
    major: int
    minor: int

    @property
    def version(self) -> str:
        """``15.1``: the part of the name used in VM-IMAGES file names."""
        return f"{self.major}.{self.minor}"


def parse_release(value: str) -> Release:
    """Accept ``15.1``, ``15.1-release`` or ``15.1-RELEASE``; refuse what fpvm cannot boot.

    p9fs (host folders) needs 15, so 14.x builds but warns (see ``release_warnings``); 13.x and older
    lack the virtio and pkgbase pieces entirely.
    """
    text = value.strip().upper()
    if re.fullmatch(r"\d+\.\d+", text):
        text += "-RELEASE"
    match = _RELEASE_RE.fullmatch(text)
    if match is None:
        raise RecipeError(f"unknown release {value!r}: use a FreeBSD release such as {DEFAULT_RELEASE}")
    major, minor = int(match["major"]), int(match["minor"])
    if major < 14:
        raise RecipeError(f"release {text} is too old: fpvm needs FreeBSD 14.0 or newer ({DEFAULT_RELEASE})")
    return Release(text, major, minor)


def release_warnings(release: Release) -> list[str]:
    """What a user loses with an older release; printed, never fatal."""
    if release.major >= 15:
        return []
    return [
        f"{release.name}: FreeBSD 14 has no p9fs, so host folders cannot be mounted; "
        f"sshd's PerSourcePenalties is left out (older OpenSSH); {DEFAULT_RELEASE} is recommended"
    ]


def _release_type(value: str) -> str:
    try:
        return parse_release(value).name
    except RecipeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size_type(value: str) -> int:
    """``4g``, ``512m`` or bytes -> bytes (binary units, as makefs and mkimg take them)."""
    match = re.fullmatch(r"(\d+)([kmgt]?)", value.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"bad size {value!r}: use a number with k, m, g or t")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[match[2]]
    return int(match[1]) * scale


def _zstd_level(value: str) -> int:
    level = _positive_int(value)
    if level > 22:
        raise argparse.ArgumentTypeError(f"zstd levels go from 1 to 22, not {level}")
    return level


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return number


@dataclass(frozen=True)
class Setting:
    """One row of the settings table: a recipe field, its option, default and help."""

    dest: str
    default: Any
    help: str
    parse: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    flag: bool = False

    @property
    def option(self) -> str:
        return "--" + self.dest.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "release",
        DEFAULT_RELEASE,
        "FreeBSD release to build (14.x works, with a warning)",
        _release_type,
        metavar="RELEASE",
    ),
    Setting(
        "arch",
        None,
        "target architecture: amd64 (x86_64) or aarch64 (arm64); default: this host's",
        archmod.argparse_type,
        metavar="ARCH",
    ),
    Setting(
        "method",
        None,
        "how to build: pkgbase (FreeBSD host), builder-vm (default on Linux/macOS), poudriere (FreeBSD host)",
        choices=METHODS,
    ),
    Setting(
        "format",
        "raw",
        "disk format: raw (fpvm machine, applehv), qcow2 (qemu), vhdx (hyperv)",
        choices=FORMATS,
    ),
    Setting(
        "compress",
        "zst",
        "compress the image: zst (default, fastest to unpack), xz, none",
        choices=COMPRESSIONS,
    ),
    Setting(
        "zstd_level",
        19,
        "zstd level (1-22): 19 is 13%% smaller than 9 on image data, 3 is fastest",
        _zstd_level,
        metavar="N",
    ),
    Setting(
        "output_dir",
        ".",
        "where the image, its SHA256 file and the build log go (default: the current directory, .)",
        Path,
        metavar="DIR",
    ),
    Setting(
        "cache_dir", None, "where downloads are cached (default: $XDG_CACHE_HOME/fpvm)", Path, metavar="DIR"
    ),
    Setting(
        "image_size",
        4 << 30,
        "size of the image, e.g. 4g or 512m (default: 4g; podman grows it on first start)",
        _size_type,
        metavar="SIZE",
    ),
    Setting(
        "fs",
        DEFAULT_FS,
        "root file system: zfs (podman's zfs driver, layers are clones) or ufs (vfs driver, least memory)",
        choices=FILESYSTEMS,
    ),
    Setting("hostname", "fpvm", "host name of the guest", metavar="NAME"),
    Setting(
        "wheel",
        None,
        "fpvm wheel to install in the image (default: made from this fpvm)",
        Path,
        metavar="FILE",
    ),
    Setting(
        "mirror",
        "https://download.freebsd.org",
        "FreeBSD download site for the builder VM image",
        metavar="URL",
    ),
    Setting("pkg_mirror", "pkg+https://pkg.FreeBSD.org", "pkg repository site", metavar="URL"),
    Setting(
        "accel",
        "auto",
        "builder VM accelerator (default: auto: KVM on Linux, HVF on macOS, tried first; if it cannot "
        "run a VM here, TCG with a warning). kvm/hvf: an error when unusable. tcg: 10-50x slower",
        choices=ACCELS,
    ),
    Setting("memory", 2048, "builder VM memory in MiB", _positive_int, metavar="MIB"),
    Setting("cpus", 2, "builder VM CPUs", _positive_int, metavar="N"),
    Setting(
        "deadline",
        3600,
        "seconds the builder VM may run before the build is abandoned",
        _positive_int,
        metavar="SECONDS",
    ),
    Setting(
        "work_dir",
        None,
        "scratch directory (default: a temporary directory in --output-dir)",
        Path,
        metavar="DIR",
    ),
    Setting("dry_run", False, "print every command of the build in order and run nothing", flag=True),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Derive the ``fpvm build`` options from ``SETTINGS``.

    Help texts are argparse format strings (``%%`` for a percent sign); a default the text does not
    state is appended, so ``--help`` shows every default.
    """
    for s in SETTINGS:
        if s.flag:
            parser.add_argument(s.option, dest=s.dest, action="store_true", help=s.help)
            continue
        text = s.help if s.default is None or "default" in s.help else f"{s.help} (default: %(default)s)"
        kwargs: dict[str, Any] = {"dest": s.dest, "default": s.default, "help": text}
        if s.parse is not None:
            kwargs["type"] = s.parse
        if s.choices is not None:
            kwargs["choices"] = s.choices
        if s.metavar is not None:
            kwargs["metavar"] = s.metavar
        parser.add_argument(s.option, **kwargs)


# --- What the image contains -------------------------------------------------------------------

# pkgbase: the minimal set plus what it leaves out and a podman guest needs. FreeBSD-ssh and
# FreeBSD-pf are in the "optional" set, FreeBSD-jail in "base"; the kernel and the loader are
# separate packages (release/packages/ucl/*-all.ucl).
BASE_PACKAGES: tuple[str, ...] = (
    "FreeBSD-set-minimal",
    "FreeBSD-kernel-generic",
    "FreeBSD-bootloader",
    "FreeBSD-ssh",
    "FreeBSD-pf",
    "FreeBSD-jail",
)
BASE_PACKAGES_BY_ARCH: dict[str, tuple[str, ...]] = {"amd64": (), "aarch64": ("FreeBSD-dtb",)}

# Ports (pkg names): podman with buildah and skopeo, the OCI runtime, sudo for podman's non-root
# ssh commands, bash for podman 5's "/usr/bin/bash" proxy script, python3 for the agent.
PORTS_PACKAGES: tuple[str, ...] = ("podman-suite", "ocijail", "sudo", "bash", "python3")
PORTS_ORIGINS: dict[str, str] = {
    "podman-suite": "sysutils/podman-suite",
    "ocijail": "sysutils/ocijail",
    "sudo": "security/sudo",
    "bash": "shells/bash",
    "python3": "lang/python3",
}
PYTHON = "/usr/local/bin/python3"

# Kernel modules loaded by the boot loader (loader.conf.d/fpvm-modules.conf).
LOADER_MODULES: tuple[str, ...] = ("virtio_p9fs", "virtio_console", "pf", "fusefs")


# rc.conf.d/<service>: one file per service, quoted name="value" lines. "network" is read by netif
# and dhclient (load_rc_config network); "hostname" by rc.d/hostname.
def rc_conf(hostname: str, fs: str = "ufs") -> dict[str, dict[str, str]]:
    services = {
        "sshd": {"sshd_enable": "YES"},
        "podman_service": {
            "podman_service_enable": "YES",
            "podman_service_flags": f"--time=0 unix://{API_SOCKET}",
            "podman_service_api_rundir": API_SOCKET.rpartition("/")[0],
            "podman_service_api_socket": API_SOCKET,
            # api_user/group/mode stay the port's (root, operator, 0770): the guest agent adds the
            # podman users to that group (fpvm.guest.apisocket).
        },
        "podman": {"podman_enable": "YES"},
        # growfs_enable also drives rc.d/fpvm_growfs (overlay), which reruns growfs at every boot:
        # rc.d/growfs itself is "KEYWORD: firstboot". No swap partition is added.
        "growfs": {"growfs_enable": "YES", "growfs_swap_size": "0"},
        "pf": {"pf_enable": "YES", "pf_rules": "/etc/pf.conf"},
        "linux": {"linux_enable": "YES"},
        "fpvm": {"fpvm_enable": "YES"},
        "network": {"ifconfig_vtnet0": "DHCP"},
        "hostname": {"hostname": hostname},
        "ntpd": {"ntpd_enable": "YES", "ntpd_sync_on_start": "YES"},
        "dumpdev": {"dumpdev": "NO"},
    }
    if fs == "zfs":
        services.update(zfs_rc_conf())
    return services


def loader_conf(arch: str, fs: str = "ufs") -> dict[str, dict[str, str]]:
    """loader.conf.d/<name>.conf files. The loader reads ``*.conf`` in ``loader_conf_dirs``.

    Consoles: amd64 boots SeaBIOS (podman's ``pc`` machine) or UEFI, so it names the serial port
    (comconsole) and the video/EFI console; arm64 always boots UEFI where ``efi`` is the firmware's
    ConOut (serial on QEMU's virt machine).
    """
    consoles = {"amd64": "comconsole,vidconsole", "aarch64": "efi"}[archmod.normalize(arch)]
    files = {
        "fpvm-modules": {f"{m}_load": "YES" for m in LOADER_MODULES},
        "fpvm-boot": {
            "autoboot_delay": "1",
            "beastie_disable": "YES",
            "loader_logo": "none",
            "kern.geom.label.disk_ident.enable": "0",
            "kern.geom.label.gptid.enable": "0",
            "debug.trace_on_panic": "1",
            "debug.debugger_on_panic": "0",
            "kern.panic_reboot_wait_time": "0",
        },
        "fpvm-console": {
            "boot_multicons": "YES",
            "boot_serial": "YES",
            "console": consoles,
            "comconsole_speed": "115200",
        },
    }
    if fs == "zfs":
        # release/tools/vmimage.subr (VMFS=zfs) adds zfs_load=YES to loader.conf and nothing else:
        # no vfs.root.mountfrom, because the loader derives it from the pool's bootfs property, which
        # keeps boot environments (bectl activate) working. UFS needs none either: fstab names "/".
        files["fpvm-zfs"] = {"zfs_load": "YES"}
    return files


# The sshd drop-in. FreeBSD's /etc/ssh/sshd_config has no "Include" line (crypto/openssh/sshd_config
# upstream), so the build adds one at the top: sshd keeps the first value it reads, so the drop-in wins.
SSHD_INCLUDE = "Include /etc/ssh/sshd_config.d/*.conf"
COMPAT_DIR = "/usr/local/libexec/fpvm/linux-compat"
SYSTEM_PATH = "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"
GUEST_PATH = f"{COMPAT_DIR}:{SYSTEM_PATH}"


def sshd_options(release: Release) -> dict[str, str]:
    """sshd settings podman needs: key logins as root, many quick connections, socket forwarding."""
    options = {
        "PermitRootLogin": "prohibit-password",
        "PubkeyAuthentication": "yes",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "AllowStreamLocalForwarding": "yes",
        "StreamLocalBindUnlink": "yes",
        "AllowTcpForwarding": "yes",
        "MaxStartups": "200",
        "MaxSessions": "100",
        "UseDNS": "no",
        # Commands podman runs over ssh find the linux-compat launchers first.
        "SetEnv": f"PATH={GUEST_PATH}",
    }
    if release.major >= 15:
        # OpenSSH 9.8 added per-source penalties; podman's and gvproxy's burst of failed attempts
        # while the guest boots must not lock the host out.
        options["PerSourcePenalties"] = "no"
    return options


STORAGE_DRIVERS: dict[str, str] = {"ufs": "vfs", "zfs": "zfs"}


def storage_driver(fs: str) -> str:
    """containers/storage's driver: zfs (a dataset per layer, a clone per container) needs a pool."""
    return STORAGE_DRIVERS[fs]


# --- The ZFS root pool ---------------------------------------------------------------------------
# The layout is FreeBSD's own ZFS VM image (release/tools/vmimage.subr, buildfs() with VMFS=zfs): a
# boot environment root (zroot/ROOT/default) and datasets for what differs in use (tmp, var/log ...),
# plus one for containers/storage, whose zfs driver makes a child dataset per image layer and a clone
# per container. makefs(8) builds it from the staging tree without a kernel (-t zfs, FreeBSD >= 14).
ZFS_POOL = "zroot"
ZFS_BOOTFS = "zroot/ROOT/default"
CONTAINERS_DATASET = "zroot/containers"
CONTAINERS_MOUNT = "/var/db/containers"
ZFS_DATASETS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("zroot", (("mountpoint", "none"),)),
    ("zroot/ROOT", (("mountpoint", "none"),)),
    ("zroot/ROOT/default", (("mountpoint", "/"),)),
    ("zroot/home", (("mountpoint", "/home"),)),
    ("zroot/tmp", (("mountpoint", "/tmp"), ("exec", "on"), ("setuid", "off"))),
    ("zroot/usr", (("mountpoint", "/usr"), ("canmount", "off"))),
    ("zroot/usr/ports", (("setuid", "off"),)),
    ("zroot/usr/src", ()),
    ("zroot/usr/obj", ()),
    ("zroot/var", (("mountpoint", "/var"), ("canmount", "off"))),
    ("zroot/var/audit", (("setuid", "off"), ("exec", "off"))),
    ("zroot/var/crash", (("setuid", "off"), ("exec", "off"))),
    ("zroot/var/log", (("setuid", "off"), ("exec", "off"))),
    ("zroot/var/mail", (("atime", "on"),)),
    ("zroot/var/tmp", (("setuid", "off"),)),
    (CONTAINERS_DATASET, (("mountpoint", CONTAINERS_MOUNT),)),
)


def zfs_mountpoints() -> list[str]:
    """Every directory a dataset is mounted on (inherited ones included), root first."""
    mounts: dict[str, str] = {}
    out = []
    for name, props in ZFS_DATASETS:
        parent = name.rsplit("/", 1)[0] if "/" in name else ""
        own = dict(props).get("mountpoint")
        if own is None:
            base = mounts.get(parent, "none")
            own = "none" if base == "none" else base.rstrip("/") + "/" + name.rsplit("/", 1)[1]
        mounts[name] = own
        if own != "none":
            out.append(own)
    return out


def makefs_zfs_options() -> list[str]:
    """The ``-o`` values of ``makefs -t zfs`` (makefs(8), zfs-specific options), in vmimage.subr's order."""
    options = [f"poolname={ZFS_POOL}", f"bootfs={ZFS_BOOTFS}", "rootpath=/"]
    for name, props in ZFS_DATASETS:
        options.append("fs=" + ";".join([name, *(f"{k}={v}" for k, v in props)]))
    return options


def zfs_rc_conf() -> dict[str, dict[str, str]]:
    """rc.conf.d files for the pool, one per rc.d script (load_rc_config reads rc.conf.d/<name>).

    As vmimage.subr's rc.conf: ``zfs_enable`` (the rcvar of rc.d/zfs, zpool, zfsbe, zpoolreguid and
    zpoolupgrade), a new pool GUID at first boot (makefs gives every image the same one, makefs(8))
    and the pool's features upgraded to the running release's.
    """
    on = {"zfs_enable": "YES"}
    return {
        "zfs": dict(on),
        "zpool": dict(on),
        "zfsbe": dict(on),
        "zpoolreguid": {**on, "zpool_reguid": ZFS_POOL},
        "zpoolupgrade": {**on, "zpool_upgrade": ZFS_POOL},
        # fpvm_arc (overlay): caps the ARC from the VM's memory at every boot (docs/image.md, Memory).
        "fpvm_arc": {"fpvm_arc_enable": "YES", "fpvm_arc_percent": "25", "fpvm_arc_min_mib": "256"},
    }


@dataclass(frozen=True)
class Recipe:
    """Resolved settings for one build (what ``SETTINGS`` parsed into)."""

    release: Release
    arch: str
    method: str
    format: str = "raw"
    compress: str = "zst"
    zstd_level: int = 19
    output_dir: Path = Path(".")
    cache_dir: Path | None = None
    image_size: int = 4 << 30
    fs: str = DEFAULT_FS
    hostname: str = "fpvm"
    wheel: Path | None = None
    mirror: str = "https://download.freebsd.org"
    pkg_mirror: str = "pkg+https://pkg.FreeBSD.org"
    accel: str = "auto"
    memory: int = 2048
    cpus: int = 2
    deadline: int = 3600
    work_dir: Path | None = None
    dry_run: bool = False
    warnings: tuple[str, ...] = field(default=())

    @property
    def machine(self) -> str:
        """FreeBSD MACHINE (``amd64``, ``arm64``)."""
        return archmod.freebsd_machine(self.arch)

    @property
    def abi(self) -> str:
        """pkg's ABI string for the target, e.g. ``FreeBSD:15:aarch64``."""
        return f"FreeBSD:{self.release.major}:{self.arch}"

    @property
    def base_packages(self) -> tuple[str, ...]:
        return BASE_PACKAGES + BASE_PACKAGES_BY_ARCH[self.arch]

    @property
    def ports_packages(self) -> tuple[str, ...]:
        return PORTS_PACKAGES

    @property
    def image_name(self) -> str:
        """``fpvm-15.1-RELEASE-aarch64.raw`` (before compression)."""
        return f"fpvm-{self.release.name}-{self.arch}.{self.format}"

    @property
    def output_name(self) -> str:
        """The file users download: ``fpvm-15.1-RELEASE-aarch64.raw.zst``."""
        return self.image_name + ("" if self.compress == "none" else f".{self.compress}")

    def pkg_repos(self) -> dict[str, str]:
        """pkg repository URLs for the target ABI (FreeBSD.conf.quarterly-release layout)."""
        base = f"{self.pkg_mirror}/{self.abi}"
        if self.release.major >= 15:
            return {
                "FreeBSD-base": f"{base}/base_release_{self.release.minor}",
                "FreeBSD-ports": f"{base}/quarterly",
            }
        # 14.x publishes pkgbase only as base_latest/base_weekly; the ports repository is "FreeBSD".
        return {"FreeBSD-base": f"{base}/base_latest", "FreeBSD-ports": f"{base}/quarterly"}


def default_method(host_system: str) -> str:
    """builder-vm everywhere but on FreeBSD, where pkgbase runs natively."""
    return "pkgbase" if host_system == "FreeBSD" else "builder-vm"


def from_args(args: argparse.Namespace, host_system: str, host_arch: str) -> Recipe:
    """Resolve parsed options (``add_arguments``) into a Recipe; defaults depend on the host."""
    values = {f.name: getattr(args, f.name) for f in fields(Recipe) if hasattr(args, f.name)}
    release = parse_release(str(values.pop("release")))
    values["arch"] = values.get("arch") or host_arch
    values["method"] = values.get("method") or default_method(host_system)
    values = {k: v for k, v in values.items() if v is not None}
    return Recipe(release=release, warnings=tuple(release_warnings(release)), **values)
