"""``--method builder-vm``: build on Linux or macOS by running the pkgbase build inside FreeBSD.

The official FreeBSD VM image for the release, in the build host's own architecture (the
BASIC-CLOUDINIT variant, checked against the release's CHECKSUM.SHA256 and cached), boots under QEMU
with hardware acceleration (KVM on Linux, HVF on macOS; TCG otherwise, with a warning). A NoCloud
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
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from fpvm import arch as archmod
from fpvm.image import cidata, download, outputs, plan, wheel
from fpvm.image.plan import BuildError, Step
from fpvm.image.recipe import Recipe

VARIANT = "BASIC-CLOUDINIT"
CHECKSUM_FILE = "CHECKSUM.SHA256"
MARKER = re.compile(r"FPVM-BUILD-(?P<state>OK|FAILED) (?P<rest>.*)")
_OK = re.compile(r"size=(?P<size>\d+) sha256=(?P<sha>[0-9a-f]{64})")
GUEST_OUT = "/var/fpvm/out"

# edk2 for arm64 guests: Debian/Ubuntu (qemu-efi-aarch64), Fedora (edk2-aarch64), Homebrew/MacPorts.
AARCH64_FIRMWARE: tuple[str, ...] = (
    "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",
    "/usr/share/AAVMF/AAVMF_CODE.fd",
    "/usr/share/edk2/aarch64/QEMU_EFI.fd",
    "/opt/homebrew/share/qemu/edk2-aarch64-code.fd",
    "/usr/local/share/qemu/edk2-aarch64-code.fd",
    "/opt/local/share/qemu/edk2-aarch64-code.fd",
)


def image_file_name(recipe: Recipe, builder_arch: str) -> str:
    """``FreeBSD-15.1-RELEASE-arm64-aarch64-BASIC-CLOUDINIT-ufs.raw.xz`` (VM-IMAGES naming)."""
    part = "amd64" if builder_arch == "amd64" else "arm64-aarch64"
    return f"FreeBSD-{recipe.release.name}-{part}-{VARIANT}-ufs.raw.xz"


def image_dir_url(recipe: Recipe, builder_arch: str) -> str:
    return f"{recipe.mirror.rstrip('/')}/releases/VM-IMAGES/{recipe.release.name}/{builder_arch}/Latest"


def choose_accel(host_system: str, host_arch: str, builder_arch: str) -> tuple[str, str | None]:
    """The QEMU accelerator and, for TCG, the warning to print."""
    if builder_arch == host_arch:
        if host_system == "Linux" and os.access("/dev/kvm", os.R_OK | os.W_OK):
            return "kvm", None
        if host_system == "Darwin":
            return "hvf", None
    return "tcg", (
        "no hardware virtualisation available (KVM/HVF): the builder VM runs under TCG emulation, "
        "which is many times slower"
    )


def find_firmware(builder_arch: str, candidates: tuple[str, ...] = AARCH64_FIRMWARE) -> Path | None:
    if builder_arch != "aarch64":
        return None  # amd64: SeaBIOS, built into QEMU
    for path in candidates:
        if Path(path).is_file():
            return Path(path)
    return None


@dataclass(frozen=True)
class VmFiles:
    """The files the builder VM uses."""

    disk: Path  # qcow2 overlay over the cached official image
    output: Path  # raw disk the guest writes the image to
    cidata: Path
    serial_log: Path
    qmp: Path


def qemu_argv(
    builder_arch: str, accel: str, memory: int, cpus: int, files: VmFiles, firmware: Path | None
) -> list[str]:
    """The builder VM: the official image, the output disk, the cidata ISO, user networking."""
    qemu = f"qemu-system-{archmod.qemu_name(builder_arch)}"
    cpu = "host" if accel in ("kvm", "hvf") else "max"
    machine = f"q35,accel={accel}" if builder_arch == "amd64" else f"virt,accel={accel},gic-version=max"
    argv = [qemu, "-machine", machine, "-cpu", cpu, "-smp", str(cpus), "-m", str(memory)]
    if firmware is not None:
        argv += ["-bios", str(firmware)]
    argv += [
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-chardev",
        f"file,id=serial0,path={files.serial_log}",
        "-serial",
        "chardev:serial0",
        "-qmp",
        f"unix:{files.qmp},server=on,wait=off",
        "-drive",
        f"if=none,id=builder,file={files.disk},format=qcow2",
        "-device",
        "virtio-blk-pci,drive=builder,bootindex=0",
        "-drive",
        f"if=none,id=output,file={files.output},format=raw",
        "-device",
        "virtio-blk-pci,drive=output",
        "-drive",
        f"if=none,id=cidata,file={files.cidata},format=raw,readonly=on",
        "-device",
        "virtio-blk-pci,drive=cidata",
        "-netdev",
        "user,id=net0",
        "-device",
        "virtio-net-pci,netdev=net0",
        "-device",
        "virtio-rng-pci",
    ]
    return argv


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
    got = outputs.sha256_file(output_disk)
    if got != sha256:
        raise BuildError(
            f"the image read back from the builder VM is damaged: sha256 {got}, expected {sha256}"
        )
    os.replace(output_disk, dest)


class QemuFailed(BuildError):
    """QEMU itself failed (not the build in the guest); ``elapsed`` tells a start failure apart."""

    def __init__(self, message: str, elapsed: float) -> None:
        super().__init__(message)
        self.elapsed = elapsed


START_FAILURE_SECONDS = 20.0


def _hint(argv: list[str]) -> str:
    machine = argv[argv.index("-machine") + 1] if "-machine" in argv else ""
    if "accel=kvm" in machine or "accel=hvf" in machine:
        return " (if hardware virtualisation is broken here, try --accel tcg)"
    return ""


def run_vm(argv: list[str], serial_log: Path, deadline: int, status: bool = True, poll: float = 1.0) -> None:
    """Run QEMU until it powers off; past ``deadline`` seconds stop it and show the serial tail."""
    serial_log.parent.mkdir(parents=True, exist_ok=True)
    err_path = serial_log.with_name(f".{serial_log.name}.qemu-stderr")
    started = time.monotonic()
    try:
        returncode = _supervise(argv, serial_log, err_path, deadline, status, poll)
        stderr = err_path.read_text(errors="replace").strip()
    finally:
        with contextlib.suppress(FileNotFoundError):
            err_path.unlink()
    if returncode != 0:
        raise QemuFailed(
            f"QEMU exited with status {returncode}: {stderr[-2000:] or 'no message'}{_hint(argv)}",
            time.monotonic() - started,
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
    qemu = f"qemu-system-{archmod.qemu_name(builder_arch)}"
    for tool in (qemu, "qemu-img"):
        if shutil.which(tool) is None:
            raise BuildError(
                f"{tool} is not installed: --method builder-vm needs QEMU "
                "(Debian/Ubuntu: apt install qemu-system qemu-utils; macOS: brew install qemu)"
            )
    firmware = find_firmware(builder_arch)
    if builder_arch == "aarch64" and firmware is None:
        raise BuildError("no UEFI firmware for arm64 QEMU found (Debian: apt install qemu-efi-aarch64)")
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
        accel = recipe.accel
    if accel == "auto":
        accel, _ = choose_accel(platform.system(), archmod.host(), builder_arch)
    if firmware is None:
        firmware = find_firmware(builder_arch) or (
            Path(AARCH64_FIRMWARE[0]) if builder_arch == "aarch64" else None
        )
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
    )
    whl = wheel_file or work / wheel.wheel_name()
    argv = qemu_argv(builder_arch, accel, recipe.memory, recipe.cpus, files, firmware)

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
        try:
            run_vm(argv, serial_log, recipe.deadline, status=status)
        except QemuFailed as exc:
            # KVM/HVF that QEMU cannot start with (nested virtualisation): with --accel auto, go on
            # under TCG rather than fail; an explicit --accel is taken at its word.
            if recipe.accel != "auto" or accel == "tcg" or exc.elapsed > START_FAILURE_SECONDS:
                raise
            first_line = str(exc).splitlines()[0]
            sys.stderr.write(f"fpvm build: warning: {first_line}; retrying the builder VM under TCG (slow)\n")
            tcg = qemu_argv(builder_arch, "tcg", recipe.memory, recipe.cpus, files, firmware)
            run_vm(tcg, serial_log, recipe.deadline, status=status)

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
