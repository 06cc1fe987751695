"""``--method pkgbase``: build the image on a FreeBSD host (or inside the builder VM) from packages.

The shape follows FreeBSD's own release/tools/vmimage.subr: ``pkg --rootdir`` installs the base
packages and the ports into a staging tree, the overlay goes on top, the password and capability
databases are regenerated as the NO_ROOT image scripts do (pwd_mkdb, cap_mkdb, services_mkdb), then
the root: ``makefs -t zfs`` the pool zroot in vmimage.subr's dataset layout (``--fs zfs``, the default)
or ``makefs -t ffs`` a UFS2 file system labelled rootfs (``--fs ufs``); ``makefs -t msdos`` the ESP, and
``mkimg -s gpt`` the disk: pmbr + gptzfsboot (zfs) or gptboot (ufs) in a freebsd-boot partition for
BIOS (SeaBIOS) and the ESP for UEFI on amd64, the ESP alone on arm64; loader.efi reads both file
systems. Argument forms: makefs(8), mkimg(1), pkg(8), pwd_mkdb(8), cap_mkdb(1), services_mkdb(8); the
ESP recipe is tools/boot/install-boot.sh's make_esp_file.
"""

from __future__ import annotations

from pathlib import Path

from fpvm.fsutil import atomic_write
from fpvm.image import overlay as ovl
from fpvm.image import plan, wheel
from fpvm.image import recipe as rcp
from fpvm.image.plan import Step
from fpvm.image.recipe import Recipe

ESP_KIB = 33292  # install-boot.sh fat32min: the smallest FAT32 the firmware accepts
SLACK = 4 << 20  # GPT headers, the freebsd-boot partition and alignment
EFI_BOOT_NAME = {"amd64": "BOOTX64.EFI", "aarch64": "BOOTAA64.EFI"}


def root_fs_size(recipe: Recipe) -> int:
    """Bytes for the UFS root: the image size minus the ESP and the partition table, MiB-aligned."""
    size = recipe.image_size - ESP_KIB * 1024 - SLACK
    if size < (1 << 30):
        raise plan.BuildError(f"--image-size {recipe.image_size} is too small: at least 1.1 GiB is needed")
    return size & ~((1 << 20) - 1)


def repo_conf(recipe: Recipe) -> dict[str, str]:
    """pkg repository files (UCL), one per repository, signatures checked with FreeBSD's keys."""
    keys = {
        "FreeBSD-base": f"/usr/share/keys/pkgbase-{recipe.release.major}",
        "FreeBSD-ports": "/usr/share/keys/pkg",
    }
    if recipe.release.major < 15:
        keys["FreeBSD-base"] = "/usr/share/keys/pkg"
    out = {}
    for name, url in recipe.pkg_repos().items():
        out[f"{name}.conf"] = (
            f'{name}: {{\n  url: "{url}",\n  mirror_type: "{"srv" if url.startswith("pkg+") else "none"}",\n'
            f'  signature_type: "fingerprints",\n  fingerprints: "{keys[name]}",\n  enabled: yes\n}}\n'
        )
    return out


def plan_steps(recipe: Recipe, work: Path, raw: Path, wheel_file: Path | None) -> list[Step]:
    """Every step from an empty ``work`` directory to the raw disk image ``raw``."""
    stage = work / "root"
    repos = work / "repos"
    esp_dir = work / "esp"
    esp_img = work / "esp.img"
    root_img = work / ("rootfs.zfs" if recipe.fs == "zfs" else "rootfs.ufs")
    s_stage = str(stage)
    pkg = [
        "pkg",
        "--rootdir",
        s_stage,
        "--repo-conf-dir",
        str(repos),
        "-o",
        f"ABI={recipe.abi}",
        "-o",
        "IGNORE_OSVERSION=yes",
        "-o",
        "ASSUME_ALWAYS_YES=yes",
    ]

    def write_repos() -> None:
        repos.mkdir(parents=True, exist_ok=True)
        for name, text in repo_conf(recipe).items():
            atomic_write(repos / name, text.encode())

    whl = wheel_file or work / wheel.wheel_name()

    def make_wheel() -> None:
        if wheel_file is None:
            wheel.build_wheel(work)

    def install_fpvm() -> None:
        wheel.install_wheel(whl, stage)

    def write_overlay() -> None:
        ovl.write(stage, ovl.entries(recipe.arch, recipe.release, recipe.hostname, fs=recipe.fs))
        ovl.apply_base_edits(stage)

    key_dirs = sorted({f"/usr/share/keys/pkgbase-{recipe.release.major}", "/usr/share/keys/pkg"})
    if recipe.release.major < 15:
        key_dirs = ["/usr/share/keys/pkg"]
    steps = [
        plan.command("create the staging tree", "mkdir", "-p", f"{s_stage}/usr/share/keys", str(esp_dir)),
        plan.action(
            "write pkg repositories",
            write_repos,
            f"write {repos}/FreeBSD-base.conf and FreeBSD-ports.conf "
            f"({', '.join(recipe.pkg_repos().values())})",
        ),
        plan.command("copy pkg signing keys", "cp", "-R", *key_dirs, f"{s_stage}/usr/share/keys/"),
        plan.command("fetch package catalogues", *pkg, "update"),
        plan.command("install the base system", *pkg, "install", "-r", "FreeBSD-base", *recipe.base_packages),
        plan.command(
            "install podman and friends", *pkg, "install", "-r", "FreeBSD-ports", *recipe.ports_packages
        ),
    ]
    if wheel_file is None:
        steps.append(plan.action("make the fpvm wheel", make_wheel, f"make {whl} from this fpvm"))
    steps += [
        plan.action(
            "install fpvm", install_fpvm, f"unpack {whl} into {s_stage}/usr/local/lib/python3.*/site-packages"
        ),
        plan.action(
            "write the overlay",
            write_overlay,
            f"fpvm image overlay {s_stage} --arch {recipe.arch} --fs {recipe.fs} "
            f"(and add '{rcp.SSHD_INCLUDE}' on top of etc/ssh/sshd_config)",
        ),
        plan.command(
            "password databases",
            "pwd_mkdb",
            "-i",
            "-p",
            "-d",
            f"{s_stage}/etc",
            f"{s_stage}/etc/master.passwd",
        ),
        plan.command("login class database", "cap_mkdb", f"{s_stage}/etc/login.conf"),
        plan.command(
            "services database",
            "services_mkdb",
            "-q",
            "-o",
            f"{s_stage}/var/db/services.db",
            f"{s_stage}/etc/services",
        ),
        plan.command("drop the package cache", *pkg, "clean", "-a"),
        *root_fs_steps(recipe, s_stage, root_img),
        plan.command("EFI loader into the ESP", "mkdir", "-p", f"{esp_dir}/EFI/BOOT"),
        plan.command(
            "EFI loader into the ESP",
            "cp",
            f"{s_stage}/boot/loader.efi",
            f"{esp_dir}/EFI/BOOT/{EFI_BOOT_NAME[recipe.arch]}",
        ),
        plan.command(
            "EFI system partition",
            "makefs",
            "-t",
            "msdos",
            "-o",
            "fat_type=32",
            "-o",
            "sectors_per_cluster=1",
            "-o",
            "volume_label=EFISYS",
            "-s",
            f"{ESP_KIB}k",
            str(esp_img),
            str(esp_dir),
        ),
        plan.command("partition the disk", *mkimg_argv(recipe, stage, esp_img, root_img, raw)),
    ]
    return steps


def root_fs_steps(recipe: Recipe, s_stage: str, image: Path) -> list[Step]:
    """The root file system image: a ZFS pool (vmimage.subr's buildfs, VMFS=zfs) or UFS2."""
    if recipe.fs == "zfs":
        # Every dataset's mountpoint is a directory of the tree (makefs maps the tree onto them).
        dirs = [f"{s_stage}{m}" for m in rcp.zfs_mountpoints() if m != "/"]
        argv = ["makefs", "-t", "zfs", "-s", str(root_fs_size(recipe)), "-B", "little"]
        for option in rcp.makefs_zfs_options():
            argv += ["-o", option]
        return [
            plan.command("dataset mount points", "mkdir", "-p", *dirs),
            plan.command("ZFS root pool", *argv, str(image), s_stage),
        ]
    return [
        plan.command(
            "UFS2 root file system",
            "makefs",
            "-t",
            "ffs",
            "-B",
            "little",
            "-s",
            str(root_fs_size(recipe)),
            "-o",
            "label=rootfs",
            "-o",
            "version=2",
            "-o",
            "softupdates=1",
            str(image),
            s_stage,
        )
    ]


def mkimg_argv(recipe: Recipe, stage: Path, esp_img: Path, root_img: Path, raw: Path) -> list[str]:
    """GPT disk: BIOS boot (amd64 only) + ESP + root, partition names = fstab's GPT labels.

    The root partition is last so that rc.d/growfs can grow it into a larger disk.
    """
    zfs = recipe.fs == "zfs"
    argv = ["mkimg", "-s", "gpt", "-f", "raw"]
    if recipe.arch == "amd64":
        boot = "gptzfsboot" if zfs else "gptboot"
        argv += ["-b", f"{stage}/boot/pmbr", "-p", f"freebsd-boot/bootfs:={stage}/boot/{boot}"]
    root_type = "freebsd-zfs" if zfs else "freebsd-ufs"
    argv += ["-p", f"efi/efiboot0:={esp_img}", "-p", f"{root_type}/rootfs:={root_img}", "-o", str(raw)]
    return argv
