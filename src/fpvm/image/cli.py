"""`fpvm build` and `fpvm image overlay`: registered cheaply, the work is imported on use."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fpvm import arch as archmod


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``build`` and ``image overlay`` to the top-level parser."""
    from fpvm.image import recipe

    build = sub.add_parser(
        "build",
        help="build the fpvm FreeBSD image for podman",
        description="Build a minimal FreeBSD image for podman machine (aarch64, amd64).",
    )
    recipe.add_arguments(build)
    build.set_defaults(func=_build)

    image = sub.add_parser("image", help="inspect what goes into the image")
    image.set_defaults(print_help=image.print_help)
    image_sub = image.add_subparsers(dest="image_command", metavar="COMMAND")
    ov = image_sub.add_parser(
        "overlay",
        help="write the image overlay into DIR for review",
        description="Write exactly the files fpvm adds on top of FreeBSD's packages.",
    )
    ov.add_argument("dir", type=Path, metavar="DIR")
    ov.add_argument(
        "--arch",
        type=archmod.argparse_type,
        required=True,
        metavar="ARCH",
        help="amd64 (x86_64) or aarch64 (arm64)",
    )
    ov.add_argument(
        "--release",
        default=recipe.DEFAULT_RELEASE,
        metavar="RELEASE",
        help=f"FreeBSD release (default {recipe.DEFAULT_RELEASE})",
    )
    ov.add_argument("--hostname", default="fpvm", metavar="NAME", help="guest host name (default fpvm)")
    ov.add_argument(
        "--fs", default=recipe.DEFAULT_FS, choices=recipe.FILESYSTEMS, help="root file system (default zfs)"
    )
    ov.set_defaults(func=_overlay)

    pk = image_sub.add_parser(
        "package",
        help="put built disks into an OCI image layout for podman machine init --image docker://",
        description="Write an OCI image layout (one index, an entry per disk type and arch) from disks "
        "built by `fpvm build` (qcow2 for podman's qemu provider, raw for fpvm machine / applehv, vhdx "
        "for hyperv).",
    )
    pk.add_argument("layout", type=Path, metavar="LAYOUT", help="the OCI layout folder (created or updated)")
    pk.add_argument("disks", type=Path, nargs="+", metavar="DISK", help="fpvm-RELEASE-ARCH.FORMAT.zst")
    pk.add_argument("--tag", help="the tag inside the layout (default: the release's major.minor, e.g. 15.1)")
    pk.add_argument("--archive", type=Path, metavar="FILE", help="also write an oci-archive tar (default no)")
    pk.set_defaults(func=_package)

    pu = image_sub.add_parser(
        "push",
        help="push a layout made by `fpvm image package` to a registry under one or more tags",
        description="Push the layout's index to every REF (docker://REGISTRY/NAME:TAG), e.g. the release "
        "tag and `latest` (an untagged reference means latest, for podman 5.8.2 as for fpvm).",
    )
    pu.add_argument("layout", type=Path, metavar="LAYOUT")
    pu.add_argument("refs", nargs="+", metavar="REF", help="docker://REGISTRY/NAME:TAG")
    pu.add_argument("--tag", help="which tag of the layout to push (default: the layout's only tag)")
    pu.add_argument("--tls-verify", choices=("true", "false"), default="true",
                    help="verify the TLS certificate; false also allows plain http (default: true)")
    pu.set_defaults(func=_push)


def _build(args: argparse.Namespace) -> int:
    from fpvm.image import build

    return build.run(args)


def _overlay(args: argparse.Namespace) -> int:
    from fpvm.image import overlay, recipe

    try:
        release = recipe.parse_release(args.release)
        entries = overlay.entries(args.arch, release, args.hostname, fs=args.fs)
        changed = overlay.write(args.dir, entries)  # creates DIR; all or nothing; never this system's /
    except (recipe.RecipeError, overlay.OverlayError, OSError) as exc:
        sys.stderr.write(f"fpvm image overlay: error: {exc}\n")
        return 1
    for warning in recipe.release_warnings(release):
        sys.stderr.write(f"fpvm image overlay: warning: {warning}\n")
    for path in changed:
        sys.stdout.write(f"{path}\n")
    return 0


def _package(args: argparse.Namespace) -> int:
    from fpvm.image import oci

    try:
        disks = [oci.disk_of(p) for p in args.disks]
        tag = args.tag or disks[0].release.split("-", 1)[0]
        top = oci.package(disks, args.layout, tag)
        if args.archive:
            oci.archive(args.layout, args.archive)
    except (oci.OciError, OSError) as exc:
        sys.stderr.write(f"fpvm image package: error: {exc}\n")
        return 1
    for d in sorted(disks, key=lambda d: (d.disktype, d.arch)):
        sys.stdout.write(f"{d.disktype}/{d.arch}: {d.title}\n")
    sys.stdout.write(f"{args.layout}:{tag} {top['digest']}\n")
    return 0


def _push(args: argparse.Namespace) -> int:
    from fpvm.image import oci

    try:
        verify = args.tls_verify == "true"
        pushed = oci.push(args.layout, args.refs, source_tag=args.tag, tls_verify=verify)
    except oci.OciError as exc:
        sys.stderr.write(f"fpvm image push: error: {exc}\n")
        return 1
    for name in pushed:
        sys.stdout.write(f"pushed {name}\n")
    return 0
