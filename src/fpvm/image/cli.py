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
