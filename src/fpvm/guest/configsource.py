"""Where the Ignition config comes from, tried in order and logged.

1. ``--config FILE`` (tests, image staging, ``fpvm guest provision``).
2. The QEMU fw_cfg entry ``opt/com.coreos/config`` read through ``fpvm.fwcfg.open_device()`` (the
   agent's own fw_cfg reader: /dev/io on amd64, /dev/mem on arm64, no kernel module needed).
3. The same entry as a file under a qemufwcfg mount (davidchisnall/qemufwcfg's FUSE file system, mounted
   at ``/var/run/qemufwcfg`` by its rc script): ``<mount>/opt/com.coreos/config``.

podman 4.x also passes the host's proxy variables as a second entry, ``opt/com.coreos/environment``,
read from the same two fw_cfg sources (see ``fpvm.guest.proxy``).

podman's other providers deliver the config in ways FreeBSD cannot receive yet. They are detected and
reported with the reason, never silently skipped:

* Hyper-V (Windows, podman 5.x): KVP pool keys ``ignition.config.0..N``. Detected by
  ``sysctl kern.vm_guest`` = ``hv`` (FreeBSD's names: none, generic, xen, hv, vmware, kvm, bhyve) or a
  non-empty ``hw.hv_vendor``. Read from hv_kvp_daemon's pool file for the host's pool 0,
  ``/var/db/hyperv/pool/.kvp_pool_0`` (``fpvm.guest.kvp``); when that file or the keys are missing
  (daemon not running yet, or not a podman VM) it is reported as unsupported, with the reason.
* applehv / libkrun (macOS, podman 5.x): HTTP over AF_VSOCK, host CID 2 port 1024, first boot only.
  Detected by a virtio-vsock PCI function (vendor 0x1af4, device 0x1053) in ``pciconf -l``, or by an
  SMBIOS maker/product naming Apple (``kenv smbios.system.maker`` / ``smbios.system.product``, a
  heuristic). Not supported: FreeBSD has no virtio-vsock driver in base.

On a Linux host (tests, the contract test's simulated VM) the same questions are answered from the
root's ``/sys/class/dmi/id`` and ``/sys/bus/pci/devices`` files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from fpvm.contract import FWCFG_CONFIG as CONFIG_ENTRY
from fpvm.contract import FWCFG_ENVIRONMENT as ENVIRONMENT_ENTRY
from fpvm.fsutil import read_regular
from fpvm.guest import kvp
from fpvm.ignition.budget import MAX_RESOURCE_BYTES

if TYPE_CHECKING:
    from fpvm.guest.context import Log
    from fpvm.guest.rootfs import RootFS
    from fpvm.guest.runner import Runner

QEMUFWCFG_MOUNT = "/var/run/qemufwcfg"
KVP_POOL_FILE = kvp.pool_file()
HYPERV_SOURCE = "hyperv KVP (ignition.config.N)"
VIRTIO_VENDOR = 0x1AF4
VIRTIO_VSOCK_DEVICE = 0x1053  # virtio 1.0 PCI id: 0x1040 + device type 19 (vsock)
MAX_CONFIG_BYTES = MAX_RESOURCE_BYTES  # a config or environment file larger than this is not read

Status = Literal["found", "absent", "error", "unsupported", "skipped"]


class FwCfgDevice(Protocol):
    """What the agent needs of ``fpvm.fwcfg.open_device()``'s result."""

    def read(self, name: str) -> bytes: ...


@dataclass(frozen=True)
class Attempt:
    """One source tried: what it was, and what came of it."""

    source: str
    status: Status
    detail: str = ""

    def line(self) -> str:
        return f"{self.source}: {self.status}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Sources:
    """The outcome: the config (if any), the environment entry (if any) and every attempt."""

    config: bytes | None = None
    config_origin: str | None = None
    environment: bytes | None = None
    environment_origin: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    unsupported: list[Attempt] = field(default_factory=list)

    def summary(self) -> str:
        if self.config is not None:
            return f"config from {self.config_origin}"
        if self.unsupported:
            return "no config: " + "; ".join(a.line() for a in self.unsupported)
        return "no config source found"


# -- platform probe ---------------------------------------------------------------------------------
Query = Callable[[Sequence[str]], "str | None"]


class Probe:
    """Read-only questions about the machine: sysctl, kenv, PCI functions (FreeBSD), or /sys (Linux).

    ``query`` runs a command and returns its stdout (None when it failed or cannot run); the default
    goes through the agent's runner, and asks nothing when the runner only records.
    """

    def __init__(self, root: RootFS | None = None, query: Query | None = None) -> None:
        self.root = root
        self.query = query or (lambda argv: None)

    @classmethod
    def from_runner(cls, root: RootFS, runner: Runner) -> Probe:
        def query(argv: Sequence[str]) -> str | None:
            if runner.recording:
                return None
            result = runner.run(list(argv), check=False)
            return result.stdout.decode("utf-8", "replace").strip() if result.ok else None

        return cls(root, query)

    def sysctl(self, name: str) -> str | None:
        return self.query(["/sbin/sysctl", "-n", name]) or None

    def kenv(self, name: str) -> str | None:
        return self.query(["/bin/kenv", "-q", name]) or None

    def dmi(self, name: str) -> str | None:
        if self.root is None:
            return None
        text = self.root.read_text(f"/sys/class/dmi/id/{name}")
        return text.strip() if text else None

    def pci_ids(self) -> set[tuple[int, int]]:
        """(vendor, device) of every PCI function: ``pciconf -l`` on FreeBSD, sysfs on Linux."""
        ids: set[tuple[int, int]] = set()
        out = self.query(["/usr/sbin/pciconf", "-l"])
        for line in (out or "").split("\n"):
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            try:
                ids.add((int(fields["vendor"], 16), int(fields["device"], 16)))
            except (KeyError, ValueError):
                continue
        if self.root is not None:
            base = self.root.root / "sys/bus/pci/devices"
            try:
                names = sorted(os.listdir(base))
            except OSError:
                names = []
            for name in names:
                try:
                    vendor = (base / name / "vendor").read_text().strip()
                    device = (base / name / "device").read_text().strip()
                    ids.add((int(vendor, 16), int(device, 16)))
                except (OSError, ValueError):
                    continue
        return ids


def hyperv_evidence(probe: Probe) -> str | None:
    """Why this looks like a Hyper-V guest, or None."""
    vm_guest = probe.sysctl("kern.vm_guest")
    if vm_guest == "hv":
        return f"kern.vm_guest={vm_guest}"
    hv_vendor = probe.sysctl("hw.hv_vendor")
    if hv_vendor:
        return f"hw.hv_vendor={hv_vendor}"
    maker = probe.dmi("sys_vendor") or probe.kenv("smbios.system.maker") or ""
    product = probe.dmi("product_name") or probe.kenv("smbios.system.product") or ""
    if maker.startswith("Microsoft") and product == "Virtual Machine":
        return f"SMBIOS {maker} / {product}"
    return None


def detect_unsupported(probe: Probe, hyperv_reason: str | None = None) -> list[Attempt]:
    """Config sources of providers this agent cannot read (here and now), with the reason.

    ``hyperv_reason`` says why the KVP pool gave no config; without it, the generic reason.
    """
    found: list[Attempt] = []
    maker = probe.dmi("sys_vendor") or probe.kenv("smbios.system.maker") or ""
    product = probe.dmi("product_name") or probe.kenv("smbios.system.product") or ""
    evidence = hyperv_evidence(probe)
    if evidence is not None:
        reason = hyperv_reason or f"no ignition.config.N keys read from {KVP_POOL_FILE}"
        found.append(Attempt(HYPERV_SOURCE, "unsupported", f"Hyper-V detected ({evidence}); {reason}"))
    vsock = (VIRTIO_VENDOR, VIRTIO_VSOCK_DEVICE) in probe.pci_ids()
    apple = "apple" in maker.lower() or "apple" in product.lower()
    if vsock or apple:
        evidence = "virtio-vsock PCI device 1af4:1053" if vsock else f"SMBIOS {maker} / {product}"
        found.append(
            Attempt(
                "applehv/libkrun vsock (CID 2 port 1024)",
                "unsupported",
                f"{evidence}; podman serves the config over AF_VSOCK, and FreeBSD has no virtio-vsock driver",
            )
        )
    return found


# -- fw_cfg ---------------------------------------------------------------------------------------
def default_fwcfg_opener() -> FwCfgDevice:
    """``fpvm.fwcfg.open_device()`` (imported late: it is only needed on a VM)."""
    from fpvm.fwcfg import open_device

    return open_device()


def _is_absent(exc: BaseException) -> bool:
    from fpvm.fwcfg.protocol import EntryNotFoundError, NoDeviceError  # only on this error path

    return isinstance(exc, (NoDeviceError, EntryNotFoundError, FileNotFoundError))


def _read_fwcfg(device: FwCfgDevice, name: str) -> tuple[bytes | None, Attempt]:
    label = f"fw_cfg {name}"
    try:
        data = device.read(name)
    except Exception as exc:  # fpvm.fwcfg.FwCfgError and OSError: reported, never fatal
        status: Status = "absent" if _is_absent(exc) else "error"
        return None, Attempt(label, status, str(exc))
    return data, Attempt(label, "found", f"{len(data)} bytes")


def _read_mount(mount: str, name: str) -> tuple[bytes | None, Attempt]:
    path = os.path.join(mount, name)
    label = f"qemufwcfg {path}"
    try:
        data = read_regular(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        return None, Attempt(label, "absent")
    except OSError as exc:
        return None, Attempt(label, "error", str(exc))
    return data, Attempt(label, "found", f"{len(data)} bytes")


def _read_kvp(probe: Probe, pool: str) -> tuple[bytes | None, Attempt, str]:
    """The config from the Hyper-V KVP pool file, the attempt, and (when none) why, for the report."""
    label = f"hyperv KVP {pool}"
    root = str(probe.root.root) if probe.root is not None else "/"
    try:
        data, pieces = kvp.read_ignition(root, pool)
    except FileNotFoundError:
        why = (
            f"{pool} does not exist: hv_kvp_daemon has not run (devd starts it when /dev/hv_kvp_dev "
            "appears; is the hv_kvp driver attached?)"
        )
        return None, Attempt(label, "absent", "no pool file"), why
    except (OSError, kvp.KvpError) as exc:
        return None, Attempt(label, "error", str(exc)), f"{pool} is unusable: {exc}"
    if data is None:
        why = (
            f"{pool} has no ignition.config.N keys (not a podman machine, or the host has not sent them yet)"
        )
        return None, Attempt(label, "absent", "no ignition.config.N keys"), why
    return data, Attempt(label, "found", f"{len(data)} bytes in {pieces} keys"), ""


def find_sources(
    *,
    config_file: str | None = None,
    fwcfg_opener: Callable[[], FwCfgDevice] | None = default_fwcfg_opener,
    qemufwcfg_mount: str | None = QEMUFWCFG_MOUNT,
    probe: Probe | None = None,
    kvp_pool: str | None = KVP_POOL_FILE,
    log: Log | None = None,
) -> Sources:
    """Try every source in order; each attempt is logged (``log.info``/``log.warn``) and returned.

    Files are read through ``fpvm.fsutil.read_regular`` (bounded, no FIFO or device, no final symlink
    but for ``--config``). An explicit ``--config`` file that cannot be read, is not a regular file or
    is larger than ``MAX_CONFIG_BYTES`` is an error (raised as OSError): the caller asked for it.
    fw_cfg problems, and those of the qemufwcfg and KVP pool files, are only reported. ``kvp_pool``
    is the guest path of hv_kvp_daemon's pool 0 file, read under the probe's root (``/`` without one)
    only when Hyper-V is detected; None skips it.
    """
    out = Sources()

    def note(attempt: Attempt) -> None:
        out.attempts.append(attempt)
        if log is not None:
            (log.warn if attempt.status in ("error", "unsupported") else log.info)(
                "config source " + attempt.line()
            )

    if config_file is not None:
        out.config = read_regular(config_file, MAX_CONFIG_BYTES, follow=True)
        out.config_origin = f"--config {config_file}"
        note(Attempt(out.config_origin, "found", f"{len(out.config)} bytes"))

    device: FwCfgDevice | None = None
    if fwcfg_opener is not None:
        try:
            device = fwcfg_opener()
        except Exception as exc:  # no device, no permission, module missing: try the next source
            note(Attempt("fw_cfg device", "absent" if _is_absent(exc) else "error", str(exc)))
    else:
        note(Attempt("fw_cfg device", "skipped", "disabled"))

    try:
        for name in (CONFIG_ENTRY, ENVIRONMENT_ENTRY):
            if name == CONFIG_ENTRY and out.config is not None:
                continue
            data, origin = None, None
            if device is not None:
                data, attempt = _read_fwcfg(device, name)
                note(attempt)
                origin = attempt.source
            if data is None and qemufwcfg_mount:
                data, attempt = _read_mount(qemufwcfg_mount, name)
                note(attempt)
                origin = attempt.source
            if data is None:
                continue
            if name == CONFIG_ENTRY:
                out.config, out.config_origin = data, origin
            else:
                out.environment, out.environment_origin = data, origin
    finally:
        close = getattr(device, "close", None)
        if callable(close):
            close()

    if out.config is None:
        probe = probe or Probe()
        hyperv_reason: str | None = None
        if kvp_pool is not None and hyperv_evidence(probe) is not None:
            data, attempt, hyperv_reason = _read_kvp(probe, kvp_pool)
            note(attempt)
            if data is not None:
                out.config, out.config_origin = data, attempt.source
        if out.config is None:
            out.unsupported = detect_unsupported(probe, hyperv_reason)
            for attempt in out.unsupported:
                note(attempt)
            if not out.unsupported:
                note(Attempt("config", "absent", "no source delivered a config"))
    return out

