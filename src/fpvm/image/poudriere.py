"""``--method poudriere``: the 2023 prototype's path, modernised, on a FreeBSD host.

A RELEASE jail from FreeBSD's binaries (``poudriere jail -c -v 15.1-RELEASE -K GENERIC``; no source
build), the official ports tree over git, ``poudriere bulk`` for the recipe's ports, then
``poudriere image -t zfs`` (``--fs zfs``: the pool zroot with a ROOT/default boot environment, GPT with
pmbr + gptzfsboot + ESP on amd64) or ``-t usb`` (``--fs ufs``: UFS root, pmbr + gptboot + ESP) with the
recipe's overlay (``-c``), package list (``-f``) and a post-script (``-A``) that installs the fpvm wheel,
makes sshd read its drop-in and, on ZFS, creates the containers dataset while poudriere still has the
pool imported. Option letters: poudriere-jail(8), poudriere-ports(8), poudriere-bulk(8),
poudriere-image(8) (whose ENVIRONMENT section names ZFS_POOL_NAME, ZFS_BEROOT_NAME, ZFS_BOOTFS_NAME).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from fpvm.fsutil import atomic_write
from fpvm.image import overlay as ovl
from fpvm.image import plan, wheel
from fpvm.image import recipe as rcp
from fpvm.image.plan import Step
from fpvm.image.recipe import PORTS_ORIGINS, Recipe

PORTS_TREE = "fpvm"
PORTS_URL = "https://git.FreeBSD.org/ports.git"
_HAS_TREE = f"poudriere ports -l -q | awk '{{print $1}}' | grep -qx {PORTS_TREE}"
IMAGE_NAME = "fpvm"  # also the UFS label poudriere gives the root (/dev/ufs/fpvm)


def jail_name(recipe: Recipe) -> str:
    return f"fpvm-{recipe.release.major}{recipe.release.minor}-{recipe.arch}"


def post_script(whl: Path, fs: str = "ufs") -> str:
    """Sourced by ``poudriere image`` after the world is populated (``-A``); WRKDIR is poudriere's.

    For ``-t zfs`` poudriere's image_zfs.sh has the pool imported under the altroot ``${WRKDIR}/world``
    with the temporary name ``${zroot}`` until its generate step, so the containers dataset is made here.
    """
    q = shlex.quote(str(whl))
    if fs == "zfs":
        dataset = rcp.CONTAINERS_DATASET.split("/", 1)[1]
        tail = f"""\
# poudriere's ESP has no GPT label: drop its fstab line (the pool needs none).
sed -i '' -e '/^\\/dev\\/gpt\\/efiboot0[[:space:]]/d' "${{world}}/etc/fstab"
# The containers dataset (containers/storage's zfs driver makes its layers below it).
zfs create -o mountpoint={rcp.CONTAINERS_MOUNT} "${{zroot}}/{dataset}"
"""
    else:
        tail = f"""\
# poudriere labels the root with the image name and has no /dev/gpt/rootfs: mount by UFS label.
sed -i '' -e 's|^/dev/gpt/rootfs[[:space:]]|/dev/ufs/{IMAGE_NAME}\\t|' \\
\t-e '/^\\/dev\\/gpt\\/efiboot0[[:space:]]/d' "${{world}}/etc/fstab"
"""
    return f"""\
# fpvm: sourced by poudriere image -A after the world and the packages are in place.
world="${{WRKDIR}}/world"
for site in "${{world}}"/usr/local/lib/python3.*/site-packages; do
\ttar -xf {q} -C "${{site}}"
done
f="${{world}}/etc/ssh/sshd_config"
if ! grep -qx '{rcp.SSHD_INCLUDE}' "${{f}}"; then
\t{{ echo '{rcp.SSHD_INCLUDE}'; echo; cat "${{f}}"; }} > "${{f}}.fpvm" && mv "${{f}}.fpvm" "${{f}}"
fi
{tail}"""


def image_type(recipe: Recipe) -> str:
    """poudriere-image(8) ``-t``: zfs (zfs+gpt, legacy and UEFI boot code) or usb (GPT, UFS2)."""
    return "zfs" if recipe.fs == "zfs" else "usb"


def image_env(recipe: Recipe) -> list[str]:
    """The pool and boot environment names poudriere-image(8) reads from its environment (zfs only)."""
    if recipe.fs != "zfs":
        return []
    beroot, bootfs = rcp.ZFS_BOOTFS.split("/")[1:]
    return [
        "env",
        f"ZFS_POOL_NAME={rcp.ZFS_POOL}",
        f"ZFS_BEROOT_NAME={beroot}",
        f"ZFS_BOOTFS_NAME={bootfs}",
    ]


def plan_steps(recipe: Recipe, work: Path, raw: Path, wheel_file: Path | None) -> list[Step]:
    jail = jail_name(recipe)
    overlay_dir = work / "overlay"
    pkglist = work / "pkglist"
    post = work / "post-image.sh"
    whl = wheel_file or work / wheel.wheel_name()
    out_dir = work / "image"

    def write_inputs() -> None:
        work.mkdir(parents=True, exist_ok=True)
        if wheel_file is None:
            wheel.build_wheel(work)
        atomic_write(pkglist, "".join(f"{PORTS_ORIGINS[p]}\n" for p in recipe.ports_packages).encode())
        atomic_write(post, post_script(whl, recipe.fs).encode(), mode=0o755)
        ovl.write(overlay_dir, ovl.entries(recipe.arch, recipe.release, recipe.hostname, fs=recipe.fs))

    size_mib = recipe.image_size >> 20
    return [
        plan.action(
            "write the image inputs",
            write_inputs,
            f"write {pkglist} ({', '.join(PORTS_ORIGINS[p] for p in recipe.ports_packages)}), "
            f"{post}, {whl} and the overlay "
            f"(fpvm image overlay {overlay_dir} --arch {recipe.arch} --fs {recipe.fs})",
        ),
        plan.command(
            "RELEASE jail",
            "poudriere",
            "jail",
            "-c",
            "-j",
            jail,
            "-v",
            recipe.release.name,
            "-a",
            f"{recipe.machine}.{recipe.arch}",
            "-K",
            "GENERIC",
            unless=("poudriere", "jail", "-i", "-j", jail),
        ),
        plan.command(
            "ports tree",
            "poudriere",
            "ports",
            "-c",
            "-p",
            PORTS_TREE,
            "-m",
            "git+https",
            "-U",
            PORTS_URL,
            unless=("sh", "-c", _HAS_TREE),
        ),
        plan.command("update the ports tree", "poudriere", "ports", "-u", "-p", PORTS_TREE),
        plan.command("build packages", "poudriere", "bulk", "-j", jail, "-p", PORTS_TREE, "-f", str(pkglist)),
        plan.command(
            "make the image",
            *image_env(recipe),
            "poudriere",
            "image",
            "-t",
            image_type(recipe),
            "-j",
            jail,
            "-p",
            PORTS_TREE,
            "-s",
            f"{size_mib}m",
            "-f",
            str(pkglist),
            "-c",
            str(overlay_dir),
            "-A",
            str(post),
            "-n",
            IMAGE_NAME,
            "-h",
            recipe.hostname,
            "-o",
            str(out_dir),
        ),
        plan.command("take the image", "mv", str(out_dir / f"{IMAGE_NAME}.img"), str(raw)),
    ]
