"""Which accelerator a VM runs with, checked before the VM starts.

``/dev/kvm`` existing (or macOS) does not mean QEMU can run a VM with it: on nested or paravirtual hosts
QEMU 7.2 aborts at once with ``failed to set MSR 0x10a`` / ``kvm_buf_set_msrs: Assertion ... failed``;
elsewhere it says ``Could not access KVM kernel module`` or ``failed to initialize kvm``, or on macOS
``HV_ERROR``. So before the real start the chosen accelerator is *probed*: QEMU is started with the very
machine type, accelerator and CPU model the VM will use, paused (``-S``), no devices, and asked over QMP
on stdio for its status. QMP commands are answered only from QEMU's main loop, which begins after the
accelerator, the vCPUs and the first machine reset are set up -- where these failures happen. An answer
proves the accelerator works; an exit or no answer proves it does not, whatever the message says.

Why a probe and not watching the real start: the probe costs one paused QEMU (about a tenth of a second
here) and decides from QEMU's behaviour, not from matching its error text; the real start is then run
once, with the accelerator that works, so neither caller needs a relaunch path (gvproxy, sockets, the
serial log and the build's deadline stay as they are).

``--accel auto`` (the default) falls back to TCG with one warning; an explicit ``--accel kvm``/``hvf``
that fails is an error that suggests ``--accel tcg`` (the user asked for it: no silent change). An
explicit ``--accel tcg`` is neither probed nor warned about.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import select
import subprocess
import time

from fpvm.machine.errors import MachineError
from fpvm.machine.qemu_argv import platform_args
from fpvm.machine.qemu_host import Host

ACCELS = ("auto", "kvm", "hvf", "tcg")
TCG_COST = "TCG emulation, about 10-50x slower than hardware acceleration"
PROBE_TIMEOUT = 30.0
PROBE_MEMORY = 64  # MiB: enough for any machine type; -S means the guest never touches it
_NAMES = {"kvm": "KVM", "hvf": "HVF", "tcg": "TCG"}
# What QEMU prints when KVM/HVF fails (after a probe that passed, it would be at run time).
_ACCEL_ERROR = re.compile(r"\bkvm|\bhvf\b|HV_ERROR|HV_DENIED|failed to set MSR", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Choice:
    """The accelerator to use and, when it is TCG although the user did not ask for it, why."""

    accel: str
    warning: str | None = None


@dataclasses.dataclass(frozen=True)
class Probe:
    ok: bool
    reason: str  # QEMU's own message when it failed


def choose(guest_arch: str, host: Host) -> tuple[str, str | None]:
    """What ``auto`` means here before any probe: (accelerator, why no hardware one)."""
    if guest_arch != host.arch:
        return "tcg", f"the guest is {guest_arch} and this host {host.arch}: KVM/HVF run the host's own only"
    if host.system == "darwin":
        return "hvf", None
    if host.system.startswith("linux"):
        if host.kvm:
            return "kvm", None
        return "tcg", "/dev/kvm is missing or not accessible to this user"
    return "tcg", f"no QEMU accelerator fpvm knows on {host.system}"


def probe(qemu: str, arch: str, accel: str, timeout: float = PROBE_TIMEOUT) -> Probe:
    """Start QEMU paused with ``accel`` and wait for its QMP answer (see the module docstring)."""
    argv = [qemu, *platform_args(arch, accel), "-m", str(PROBE_MEMORY)]
    argv += ["-nodefaults", "-display", "none", "-S", "-qmp", "stdio"]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise MachineError(f"cannot run {qemu}: {exc}") from None
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        request = {"execute": "qmp_capabilities"}, {"execute": "query-status", "id": "fpvm-probe"}
        try:
            proc.stdin.write("".join(json.dumps(r) + "\n" for r in request).encode())
            proc.stdin.flush()
        except OSError:
            pass  # it died already: its stderr says why
        deadline = time.monotonic() + timeout
        answer = _answer(proc.stdout.fileno(), deadline)
        if answer == "yes":
            return Probe(True, "")
        if answer == "eof":  # QEMU is exiting: wait for its status
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(1.0, deadline - time.monotonic()))
        if proc.poll() is None:
            return Probe(False, f"QEMU gave no sign of life within {timeout:.0f} s")
        return Probe(False, _reason(proc.stderr.read(), proc.returncode))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):  # stdin of a QEMU that died: a broken pipe
                stream.close()


def _answer(fd: int, deadline: float) -> str:
    """``yes`` (QMP answered), ``eof`` (QEMU closed its output: it is exiting) or ``timeout``."""
    buf = b""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        data = os.read(fd, 65536)
        if not data:
            return "eof"
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("id") == "fpvm-probe" and "return" in msg:
                return "yes"
    return "timeout"


def _reason(stderr: bytes, returncode: int) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    status = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    if not lines:
        return f"QEMU stopped at once ({status})"
    return " / ".join(lines[:2])[:300] + f" ({status})"


def resolve(qemu: str, arch: str, host: Host, requested: str = "auto") -> Choice:
    """The accelerator the VM runs with; KVM/HVF are probed; a failing explicit one raises MachineError."""
    if requested not in ACCELS:
        raise MachineError(f"--accel {requested}: choose one of {', '.join(ACCELS)}")
    if requested == "tcg":
        return Choice("tcg")
    if requested == "auto":
        accel, why = choose(arch, host)
        if accel == "tcg":
            return Choice("tcg", no_acceleration(why or "none available"))
    else:
        accel = requested
    result = probe(qemu, arch, accel)
    if result.ok:
        return Choice(accel)
    name = _NAMES[accel]
    if requested == "auto":
        return Choice("tcg", no_acceleration(f"QEMU cannot start a VM with {name} here: {result.reason}"))
    raise MachineError(
        f"--accel {accel}: QEMU cannot start a VM with {name} on this host: {result.reason}. "
        f"Use --accel tcg ({TCG_COST}), or --accel auto to fall back to it by itself"
    )


def no_acceleration(why: str) -> str:
    """The one warning of a TCG run nobody asked for."""
    return (
        f"no hardware acceleration ({why}): running under {TCG_COST}; "
        "pass --accel tcg to skip this check and this warning"
    )


def accel_failure(qemu_output: str) -> bool:
    """QEMU's output names a KVM/HVF failure (for the hint of a start that failed anyway)."""
    return bool(_ACCEL_ERROR.search(qemu_output))
