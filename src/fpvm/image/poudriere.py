"""``--method poudriere``: the 2023 prototype's path, modernised, on a FreeBSD host.

A RELEASE jail from FreeBSD's binaries (``poudriere jail -c -v 15.1-RELEASE -K GENERIC``; no source
build), the official ports tree over git, ``poudriere bulk`` for the recipe's ports, then
``poudriere image -t usb`` (UFS root, GPT with pmbr + gptboot + ESP on amd64) with the recipe's
overlay (``-c``), package list (``-f``) and a post-script (``-A``) that installs the fpvm wheel and
makes sshd read its drop-in. Option letters: poudriere-jail(8), poudriere-ports(8), poudriere-bulk(8),
poudriere-image(8).
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


def post_script(whl: Path) -> str:
    """Sourced by ``poudriere image`` after the world is populated (``-A``); WRKDIR is poudriere's."""
    q = shlex.quote(str(whl))
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
# poudriere labels the root with the image name and has no /dev/gpt/rootfs: mount by UFS label.
sed -i '' -e 's|^/dev/gpt/rootfs[[:space:]]|/dev/ufs/{IMAGE_NAME}\\t|' \\
\t-e '/^\\/dev\\/gpt\\/efiboot0[[:space:]]/d' "${{world}}/etc/fstab"
"""


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
        atomic_write(post, post_script(whl).encode(), mode=0o755)
        ovl.write(overlay_dir, ovl.entries(recipe.arch, recipe.release, recipe.hostname))

    size_mib = recipe.image_size >> 20
    return [
        plan.action(
            "write the image inputs",
            write_inputs,
            f"write {pkglist} ({', '.join(PORTS_ORIGINS[p] for p in recipe.ports_packages)}), "
            f"{post}, {whl} and the overlay (fpvm image overlay {overlay_dir} --arch {recipe.arch})",
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
            "poudriere",
            "image",
            "-t",
            "usb",
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
