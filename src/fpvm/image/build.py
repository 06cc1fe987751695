"""``fpvm build``: plan the chosen method's steps, then run them (or print them for ``--dry-run``).

Failures end in one message, and whatever the failed build left in the output directory (a
half-written image, a compressed file, its checksum) is removed; the serial log of a builder VM is
kept because it is what explains the failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from fpvm import arch as archmod
from fpvm.image import builder_vm, outputs, pkgbase, poudriere
from fpvm.image import recipe as rcp
from fpvm.image.download import default_cache_dir
from fpvm.image.plan import BuildError, Step, print_plan, run_steps

FREEBSD_ONLY = ("pkgbase", "poudriere")


def partial_outputs(recipe: rcp.Recipe, since: float = 0.0) -> list[Path]:
    """What this build left in the output directory (written after ``since``), except the serial log.

    Outputs of an earlier, successful build that this one never touched are kept.
    """
    out = recipe.output_dir
    names = [recipe.image_name, recipe.image_name + ".zst", recipe.image_name + ".xz"]
    paths = []
    for name in names:
        paths += [out / name, out / f"{name}.sha256"]
        paths += [out / f".{name}.fpvm-tmp", out / f".{name}.sha256.fpvm-tmp"]
    return [p for p in paths if _mtime(p) >= since]


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return -1.0


def serial_log_path(recipe: rcp.Recipe) -> Path:
    return recipe.output_dir / f"fpvm-{recipe.release.name}-{recipe.arch}.build.log"


def plan_build(recipe: rcp.Recipe, work: Path, status: bool = True) -> list[Step]:
    """The complete, ordered list of steps for ``recipe`` using ``work`` as scratch space."""
    raw = work / "image.raw"
    if recipe.method == "pkgbase":
        steps = pkgbase.plan_steps(recipe, work, raw, recipe.wheel)
    elif recipe.method == "poudriere":
        steps = poudriere.plan_steps(recipe, work, raw, recipe.wheel)
    else:
        cache = recipe.cache_dir or default_cache_dir()
        steps = builder_vm.plan_steps(
            recipe, work, cache, raw, serial_log_path(recipe), recipe.wheel, status=status
        )
    return steps + outputs.output_steps(
        raw, recipe.output_dir, recipe.image_name, recipe.format, recipe.compress, recipe.zstd_level
    )


def _say(err: TextIO, text: str) -> None:
    err.write(f"fpvm build: {text}\n")
    err.flush()


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        recipe = rcp.from_args(args, platform.system(), archmod.host())
    except (rcp.RecipeError, archmod.ArchError) as exc:
        err.write(f"fpvm build: error: {exc}\n")
        return 2
    for warning in recipe.warnings:
        err.write(f"fpvm build: warning: {warning}\n")
    if recipe.dry_run:
        work = recipe.work_dir or recipe.output_dir / ".fpvm-build"
        print_plan(plan_build(recipe, work, status=False), out)
        return 0
    if recipe.method in FREEBSD_ONLY and platform.system() != "FreeBSD":
        err.write(
            f"fpvm build: error: --method {recipe.method} runs on a FreeBSD host; "
            "on Linux or macOS use --method builder-vm\n"
        )
        return 2
    created = recipe.work_dir is None
    started = time.time() - 1
    try:
        recipe.output_dir.mkdir(parents=True, exist_ok=True)
        if recipe.method == "builder-vm":
            builder_arch = archmod.host()
            builder_vm.check_host(
                recipe, builder_arch, recipe.output_dir, recipe.cache_dir or default_cache_dir()
            )
            choice = builder_vm.resolve_accel(recipe, builder_arch)  # KVM/HVF probed; auto may fall back
            if choice.warning:
                err.write(f"fpvm build: warning: {choice.warning}\n")
            recipe = dataclasses.replace(recipe, accel=choice.accel)
        else:
            builder_vm.check_space(recipe.output_dir, 3 * recipe.image_size)
        work = recipe.work_dir or Path(tempfile.mkdtemp(prefix=".fpvm-build-", dir=recipe.output_dir))
        work.mkdir(parents=True, exist_ok=True)
        try:
            run_steps(plan_build(recipe, work), log=lambda title: _say(err, title))
        finally:
            if created:
                shutil.rmtree(work, ignore_errors=True)
    except BuildError as exc:
        outputs.remove(partial_outputs(recipe, started))
        err.write(f"fpvm build: error: {exc}\n")
        return 1
    except OSError as exc:
        outputs.remove(partial_outputs(recipe, started))
        err.write(f"fpvm build: error: {exc}\n")
        return 1
    final = recipe.output_dir / recipe.output_name
    err.write(f"fpvm build: done: {final} (checksum in {final.name}.sha256)\n")
    return 0
