"""``--method builder-vm``: build on Linux or macOS by running the pkgbase build inside FreeBSD.

The official FreeBSD VM image for the release, in the build host's own architecture (the
BASIC-CLOUDINIT variant, checked against the release's CHECKSUM.SHA256 and cached), boots under QEMU
with hardware acceleration (KVM on Linux, HVF on macOS, probed first; TCG otherwise, with one warning:
fpvm.machine.qemu_accel). QEMU, its firmware and its command line come from the same layer as
`fpvm machine` (fpvm.machine.qemu_host, qemu_argv). A NoCloud
``cidata`` ISO carries the fpvm wheel and a ``#!`` user-data script that nuageinit runs: it installs
python3, runs ``fpvm build --method pkgbase`` for the *target* arch (pkg installs foreign-arch
packages with its ABI set, so the builder itself runs natively), writes the image to a second virtio
disk, prints a marker line with its size and sha256 on the serial console and powers off. The host
checks the marker, trims the output disk to that size, verifies the hash, and makes the outputs.
The serial console is kept next to the output as ``<image>.build.log``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from fpvm import arch as archmod
from fpvm.fsutil import sha256_file
from fpvm.image import cidata, download, outputs, plan, wheel
from fpvm.image.plan import BuildError, Step
from fpvm.image.recipe import Recipe
from fpvm.machine import qemu_accel, qemu_host
from fpvm.machine.errors import MachineError
from fpvm.machine.qemu_argv import QemuArgv, is_pflash

VARIANT = "BASIC-CLOUDINIT"
CHECKSUM_FILE = "CHECKSUM.SHA256"
MARKER = re.compile(r"FPVM-BUILD-(?P<state>OK|FAILED) (?P<rest>.*)")
_OK = re.compile(r"size=(?P<size>\d+) sha256=(?P<sha>[0-9a-f]{64})")
GUEST_OUT = "/var/fpvm/out"


def image_file_name(recipe: Recipe, builder_arch: str) -> str:
    """``FreeBSD-15.1-RELEASE-arm64-aarch64-BASIC-CLOUDINIT-ufs.raw.xz`` (VM-IMAGES naming)."""
    part = "amd64" if builder_arch == "amd64" else "arm64-aarch64"
    return f"FreeBSD-{recipe.release.name}-{part}-{VARIANT}-ufs.raw.xz"


def image_dir_url(recipe: Recipe, builder_arch: str) -> str:
    return f"{recipe.mirror.rstrip('/')}/releases/VM-IMAGES/{recipe.release.name}/{builder_arch}/Latest"


@contextlib.contextmanager
def _as_build_error() -> Iterator[None]:
    """The shared QEMU layer speaks MachineError; `fpvm build` reports BuildError."""
    try:
        yield
    except MachineError as exc:
        raise BuildError(str(exc)) from None


def resolve_accel(recipe: Recipe, builder_arch: str) -> qemu_accel.Choice:
    """``--accel`` made real: KVM/HVF probed, ``auto`` falls back to TCG with a warning, an explicit
    accelerator that does not work is an error suggesting ``--accel tcg``."""
    with _as_build_error():
        exe = qemu_host.find_qemu(builder_arch)
        return qemu_accel.resolve(exe, builder_arch, qemu_host.Host.detect(), recipe.accel)


@dataclass(frozen=True)
class VmFiles:
    """The files the builder VM uses."""

    disk: Path  # qcow2 overlay over the cached official image
    output: Path  # raw disk the guest writes the image to
    cidata: Path
    serial_log: Path
    qmp: Path
    efi_vars: Path | None = None  # for pflash firmware; default: efi-vars.fd beside the disk

    @property
    def vars_store(self) -> Path:
        return self.efi_vars or self.disk.with_name("efi-vars.fd")


def vm_argv(
    qemu: str, builder_arch: str, accel: str, memory: int, cpus: int, files: VmFiles, firmware: Path | None
) -> list[str]:
    """The builder VM: the official image, the output disk, the cidata ISO, user networking."""
    vm = QemuArgv(qemu, builder_arch, accel, memory=memory, cpus=cpus)
    vm.firmware(firmware, files.vars_store)
    vm.add("-display", "none", "-monitor", "none", "-no-reboot")
    vm.serial_file(files.serial_log)
    vm.qmp(files.qmp)
    vm.virtio_blk("builder", files.disk, "qcow2", bootindex=0)
    vm.virtio_blk("output", files.output, "raw")
    vm.virtio_blk("cidata", files.cidata, "raw", readonly=True)
    vm.user_net()
    vm.rng()
    return vm.argv


def user_data(recipe: Recipe, wheel_name: str) -> str:
    """The script nuageinit runs once in the builder VM (FreeBSD sh)."""
    image = f"{GUEST_OUT}/fpvm-{recipe.release.name}-{recipe.arch}.raw"
    build = [
        "python3",
        "-m",
        "fpvm",
        "build",
        "--method",
        "pkgbase",
        "--arch",
        recipe.arch,
        "--release",
        recipe.release.name,
        "--hostname",
        recipe.hostname,
        "--image-size",
        str(recipe.image_size),
        "--fs",
        recipe.fs,
        "--format",
        "raw",
        "--compress",
        "none",
        "--output-dir",
        GUEST_OUT,
        "--work-dir",
        "/var/fpvm/work",
        "--pkg-mirror",
        recipe.pkg_mirror,
    ]
    wheel_path = f'"${{src}}/{wheel_name}"'
    return f"""#!/bin/sh
# fpvm builder: run once by nuageinit; the result goes to the second disk (vtbd1).
exec >/dev/console 2>&1
fpvm_build()
{{
\techo "fpvm: building {recipe.output_name} inside the builder VM"
\tmkdir -p /var/fpvm/cidata {GUEST_OUT}
\t# nuageinit may still hold the ISO at /media/nuageinit: use that copy then.
\tsrc=/var/fpvm/cidata
\tmount -t cd9660 /dev/iso9660/{cidata.VOLUME_ID} "${{src}}" || src=/media/nuageinit
\tenv ASSUME_ALWAYS_YES=yes pkg install -y python3
\tenv PYTHONPATH={wheel_path} {shlex.join(build)} --wheel {wheel_path}
\tsize=$(stat -f %z {image})
\tsum=$(sha256 -q {image})
\tdd if={image} of=/dev/vtbd1 bs=1m
\tsync
\techo "FPVM-BUILD-OK size=${{size}} sha256=${{sum}}"
}}
( set -e; fpvm_build )
status=$?
if [ "$status" -ne 0 ]; then
\techo "FPVM-BUILD-FAILED status=${{status}}"
fi
shutdown -p now
"""


def guest_recipe(recipe: Recipe) -> Recipe:
    """The pkgbase build the user-data runs: same image, raw and uncompressed, at guest paths."""
    return replace(
        recipe,
        method="pkgbase",
        format="raw",
        compress="none",
        output_dir=Path(GUEST_OUT),
        work_dir=Path("/var/fpvm/work"),
        wheel=Path(f"/var/fpvm/cidata/{wheel.wheel_name()}"),
    )


def guest_steps(recipe: Recipe, wheel_name: str) -> list[Step]:
    """The build inside the VM, shown in the plan (run there by the user-data, not here)."""
    from fpvm.image import outputs as outs
    from fpvm.image import pkgbase

    inner = guest_recipe(recipe)
    work = Path("/var/fpvm/work")
    lines = [
        "mount -t cd9660 /dev/iso9660/cidata /var/fpvm/cidata",
        "env ASSUME_ALWAYS_YES=yes pkg install -y python3",
    ]
    steps = pkgbase.plan_steps(inner, work, work / "image.raw", inner.wheel)
    steps += outs.output_steps(work / "image.raw", inner.output_dir, inner.image_name, "raw", "none")
    lines += [s.render().removeprefix("# fpvm: ") for s in steps]
    lines.append(f"dd if={GUEST_OUT}/{inner.image_name} of=/dev/vtbd1 bs=1m")
    lines.append("shutdown -p now")
    return [
        plan.action("in the builder VM", lambda: None, f"in the builder VM: {line}", quiet=True)
        for line in lines
    ]


def meta_data(recipe: Recipe) -> str:
    return f"instance-id: fpvm-builder-{recipe.release.name}-{recipe.arch}\nlocal-hostname: fpvm-builder\n"


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no serial output)"
    tail = [line.rstrip("\r") for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(f"  | {line}" for line in tail) or "(no serial output)"


def parse_result(serial_log: Path) -> tuple[int, str]:
    """(size, sha256) from the guest's marker line; BuildError if the build failed or said nothing."""
    text = serial_log.read_text(errors="replace") if serial_log.is_file() else ""
    found = None
    for match in MARKER.finditer(text):
        found = match
    if found is None:
        raise BuildError(
            f"the builder VM stopped without reporting a result; serial log {serial_log}:\n"
            + log_tail(serial_log)
        )
    if found["state"] == "FAILED":
        raise BuildError(
            f"the build inside the builder VM failed ({found['rest'].strip()}); "
            f"serial log {serial_log}:\n" + log_tail(serial_log)
        )
    ok = _OK.search(found["rest"])
    if ok is None:
        raise BuildError(f"unreadable result line in {serial_log}: {found.group(0)!r}")
    return int(ok["size"]), ok["sha"]


def extract(output_disk: Path, size: int, sha256: str, dest: Path) -> None:
    """Trim the output disk to the image the guest wrote and check its hash before keeping it."""
    if output_disk.stat().st_size < size:
        raise BuildError(f"the builder VM reported {size} bytes but {output_disk} is smaller")
    with output_disk.open("r+b") as fh:
        fh.truncate(size)
    got = sha256_file(output_disk)
    if got != sha256:
        raise BuildError(
            f"the image read back from the builder VM is damaged: sha256 {got}, expected {sha256}"
        )
    os.replace(output_disk, dest)


def _hint(argv: list[str], stderr: str) -> str:
    accel = argv[argv.index("-accel") + 1] if "-accel" in argv else ""
    if accel in ("kvm", "hvf") and qemu_accel.accel_failure(stderr):
        return f" (hardware acceleration failed: --accel tcg runs without it, {qemu_accel.TCG_COST})"
    return ""


def run_vm(argv: list[str], serial_log: Path, deadline: int, status: bool = True, poll: float = 1.0) -> None:
    """Run QEMU until it powers off; past ``deadline`` seconds stop it and show the serial tail."""
    serial_log.parent.mkdir(parents=True, exist_ok=True)
    err_path = serial_log.with_name(f".{serial_log.name}.qemu-stderr")
    try:
        returncode = _supervise(argv, serial_log, err_path, deadline, status, poll)
        stderr = err_path.read_text(errors="replace").strip()
    finally:
        with contextlib.suppress(FileNotFoundError):
            err_path.unlink()
    if returncode != 0:
        raise BuildError(
            f"QEMU exited with status {returncode}: {stderr[-2000:] or 'no message'}{_hint(argv, stderr)}"
        )


def _supervise(
    argv: list[str], serial_log: Path, err_path: Path, deadline: int, status: bool, poll: float
) -> int:
    started = time.monotonic()
    with err_path.open("wb") as err:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        except FileNotFoundError:
            raise BuildError(f"{argv[0]} is not installed: install QEMU to use --method builder-vm") from None
        try:
            with _status_line(status) as update:
                while proc.poll() is None:
                    elapsed = time.monotonic() - started
                    if elapsed > deadline:
                        raise BuildError(
                            f"the builder VM did not finish within {deadline} s (--deadline); last lines of "
                            f"its serial log {serial_log}:\n" + log_tail(serial_log)
                        )
                    update(f"builder VM running {int(elapsed)}s: {_last_line(serial_log)}")
                    time.sleep(poll)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return proc.returncode


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4096))
            lines = [x for x in fh.read().decode(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "starting"
    return lines[-1][-100:] if lines else "booting"


@contextlib.contextmanager
def _status_line(enabled: bool):  # type: ignore[no-untyped-def]
    if not enabled:
        yield lambda _text: None
        return
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda _text: None
        return
    with console.status("builder VM starting") as live:
        yield lambda text: live.update(text)


def builder_disk_size(recipe: Recipe) -> int:
    """Room inside the builder: staging tree, the UFS image and the raw image side by side."""
    return 3 * recipe.image_size + (8 << 30)


def space_needed(recipe: Recipe) -> int:
    """Rough host space: the output disk, the builder's writes, the compressed result."""
    return 3 * recipe.image_size + (4 << 30)


def check_host(recipe: Recipe, builder_arch: str, work: Path, cache: Path) -> Path | None:
    """Refuse early, with one clear message, what would fail later: QEMU, firmware, disk space."""
    with _as_build_error():
        exe = qemu_host.find_qemu(builder_arch)
        if shutil.which("qemu-img") is None:
            raise BuildError(f"qemu-img is not installed: install QEMU ({qemu_host.install_hint()})")
        firmware = qemu_host.find_firmware(exe) if builder_arch == "aarch64" else None
    check_space(work, space_needed(recipe))
    check_space(cache, 2 << 30)
    return firmware


def check_space(directory: Path, needed: int) -> None:
    probe = directory
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise BuildError(
            f"not enough free space in {directory}: the build needs about "
            f"{needed / (1 << 30):.1f} GiB, {free / (1 << 30):.1f} GiB free"
        )


def plan_steps(
    recipe: Recipe,
    work: Path,
    cache: Path,
    raw: Path,
    serial_log: Path,
    wheel_file: Path | None,
    builder_arch: str | None = None,
    accel: str | None = None,
    firmware: Path | None = None,
    status: bool = True,
) -> list[Step]:
    """Every step of a builder-VM build, from download to the raw image at ``raw``."""
    builder_arch = builder_arch or archmod.host()
    if accel is None:
        accel = recipe.accel  # `fpvm build` has resolved (probed) it by now; a dry run has not
    if accel == "auto":
        accel = qemu_accel.choose(builder_arch, qemu_host.Host.detect())[0]
    qemu = qemu_host.qemu_command(builder_arch)
    if firmware is None and builder_arch == "aarch64":
        try:
            firmware = qemu_host.find_firmware(qemu)
        except MachineError:
            firmware = Path(
                "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"
            )  # what a dry run shows; a build stops earlier
    name = image_file_name(recipe, builder_arch)
    base_url = image_dir_url(recipe, builder_arch)
    compressed = cache / name
    base_raw = cache / name.removesuffix(".xz")
    files = VmFiles(
        disk=work / "builder.qcow2",
        output=work / "output.raw",
        cidata=work / "cidata.iso",
        serial_log=serial_log,
        qmp=work / "qmp.sock",
        efi_vars=work / "efi-vars.fd",
    )
    whl = wheel_file or work / wheel.wheel_name()
    argv = vm_argv(qemu, builder_arch, accel, recipe.memory, recipe.cpus, files, firmware)

    def fetch() -> None:
        digest = download.expected_sha256(f"{base_url}/{CHECKSUM_FILE}", name, cache)
        fresh = download.download(f"{base_url}/{name}", compressed, digest, show_progress=status)
        if fresh and base_raw.exists():
            base_raw.unlink()

    def unpack() -> None:
        if not base_raw.is_file():
            outputs.decompress_xz(compressed, base_raw)

    def make_wheel() -> None:
        wheel.build_wheel(work)

    def make_cidata() -> None:
        cidata.write_cidata(
            files.cidata,
            {
                "user-data": user_data(recipe, whl.name).encode(),
                "meta-data": meta_data(recipe).encode(),
                whl.name: whl,
            },
        )

    def boot() -> None:
        if firmware is not None and is_pflash(firmware):
            qemu_host.ensure_efi_vars(files.vars_store)
        run_vm(argv, serial_log, recipe.deadline, status=status)

    def take() -> None:
        size, digest = parse_result(serial_log)
        extract(files.output, size, digest, raw)

    steps = [
        plan.action(
            "download the builder image",
            fetch,
            f"download {base_url}/{name} into {cache} (checked against {base_url}/{CHECKSUM_FILE}; "
            "a cached copy with the right sha256 is reused)",
        ),
        plan.action("unpack the builder image", unpack, f"unxz {compressed} to {base_raw} (once, cached)"),
        plan.command(
            "builder disk",
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            str(base_raw),
            "-F",
            "raw",
            str(files.disk),
            str(builder_disk_size(recipe)),
        ),
        plan.command(
            "output disk", "qemu-img", "create", "-q", "-f", "raw", str(files.output), str(recipe.image_size)
        ),
    ]
    if wheel_file is None:
        steps.append(plan.action("make the fpvm wheel", make_wheel, f"make {whl} from this fpvm"))
    steps += [
        plan.action(
            "cidata ISO",
            make_cidata,
            f"write {files.cidata} (pycdlib; volume {cidata.VOLUME_ID}: user-data, meta-data, {whl.name})",
        ),
        *guest_steps(recipe, whl.name),
        plan.supervised("build inside the builder VM", argv, boot),
        plan.action(
            "take the image from the output disk",
            take,
            f"check the FPVM-BUILD-OK line in {serial_log}, trim {files.output} to the reported size, "
            f"verify its sha256 and move it to {raw}",
        ),
    ]
    return steps
