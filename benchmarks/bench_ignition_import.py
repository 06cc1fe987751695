"""What reading podman's Ignition config costs a fresh guest process, next to the interpreter alone.

Run: ``.venv/bin/python benchmarks/bench_ignition_import.py [--runs 21] [--python PY] [--top 15]``
(default interpreter: /usr/bin/python3 when present: no version-manager shim, no extra .pth files).

Every ``fpvm guest ...`` command (provision at boot, the linux-compat shims on each podman ssh command)
is a new interpreter, so the import of ``fpvm.ignition`` is paid again each time. Measured, wall
clock, median and best of ``--runs`` fresh processes, interleaved so that a loaded machine slows every
row alike (compare the "x pass" ratio and "+ms" columns rather than raw milliseconds; CPU time, from
``getrusage``, is steadier than wall time on a busy machine):

* ``-c pass`` - the interpreter's own start-up;
* ``import fpvm.ignition`` - the engine's public API (parse/check/Report);
* ``import + parse`` - the same and parsing podman's config (examples/podman-5.8.2-qemu.ign);
* ``fpvm ignition validate`` - the whole CLI on that file;
* ``import fpvm.guest.compat`` - what every shim (``fpvm guest shim mount ...``) imports first.

Then, in this process: the parse time of podman's config alone (best of many) and, with ``--top``, the
largest self import times reported by ``-X importtime`` for ``import fpvm.ignition``.

The package is copied to a temporary directory and byte-compiled first, as it is in the image (the
test environment sets PYTHONDONTWRITEBYTECODE, which would otherwise make every run recompile).
"""

from __future__ import annotations

import argparse
import compileall
import importlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "examples/podman-5.8.2-qemu.ign"


def staged_package(base: Path, package: Path) -> Path:
    """A byte-compiled copy of ``package`` under ``base`` (returned: the directory to put on sys.path)."""
    site = base / "site"
    shutil.copytree(package, site / "fpvm", ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(site, quiet=1)
    return site


def rows(python: str, config: Path) -> dict[str, list[str]]:
    parse = f"import fpvm.ignition as i; i.parse(open({str(config)!r}, 'rb').read())"
    return {
        "-c pass": [python, "-c", "pass"],
        "import fpvm.ignition": [python, "-c", "import fpvm.ignition"],
        "import + parse podman config": [python, "-c", parse],
        "fpvm ignition validate": [python, "-m", "fpvm", "ignition", "validate", str(config)],
        "import fpvm.guest.compat": [python, "-c", "import fpvm.guest.compat"],
    }


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_rows(
    commands: dict[str, list[str]], env: dict[str, str], runs: int
) -> dict[str, tuple[list[float], list[float]]]:
    """(wall times, CPU times) of each command, ``runs`` fresh processes each, interleaved."""
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            cpu = child_cpu()
            start = time.perf_counter()
            subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
            times[name][0].append(time.perf_counter() - start)
            times[name][1].append(child_cpu() - cpu)
    return times


def import_top(python: str, env: dict[str, str], top: int) -> list[tuple[int, int, str]]:
    out = subprocess.run(
        [python, "-X", "importtime", "-c", "import fpvm.ignition"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    found: list[tuple[int, int, str]] = []
    for line in out.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            found.append((int(parts[0]), int(parts[1]), parts[2].rstrip()))
    return sorted(found, reverse=True)[:top]


def in_process_parse(site: Path, config: Path, loops: int) -> float:
    sys.path.insert(0, str(site))
    ign = importlib.import_module("fpvm.ignition")  # the staged copy: nothing imported fpvm before

    data = config.read_bytes()
    fastest = float("inf")
    for _ in range(loops):
        start = time.perf_counter()
        ign.parse(data)
        fastest = min(fastest, time.perf_counter() - start)
    return fastest


def default_python() -> str:
    """The system's python3 (like the guest's: no version-manager shim, no extra .pth), else this one."""
    system = Path("/usr/bin/python3")
    return str(system) if system.exists() else os.path.realpath(sys.executable)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--python", default=default_python(), help="interpreter to measure (default %(default)s)")
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument(
        "--package",
        type=Path,
        default=REPO / "src/fpvm",
        help="the fpvm package to measure (e.g. an older copy)",
    )
    ap.add_argument("--top", type=int, default=0, help="show the N largest self import times")
    opts = ap.parse_args()
    python = opts.python
    with tempfile.TemporaryDirectory() as tmp:
        site = staged_package(Path(tmp), opts.package)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONPATH"] = str(site)
        version = subprocess.run(
            [python, "-c", "import sys; print(sys.version.split()[0])"],
            env=env,
            capture_output=True,
            text=True,
        ).stdout.strip()
        load = os.getloadavg()[0]
        print(f"{python} (Python {version}), {os.cpu_count()} CPUs, load {load:.1f}, {opts.runs} runs")
        times = time_rows(rows(python, opts.config), env, opts.runs)
        base = statistics.median(times["-c pass"][0])
        base_cpu = statistics.median(times["-c pass"][1])
        print(
            f"{'':31} {'wall median':>11} {'best':>6} {'x pass':>6} {'+ms':>6} {'cpu median':>11} {'+ms':>6}"
        )
        for name, (wall, cpu) in times.items():
            med, med_cpu = statistics.median(wall), statistics.median(cpu)
            print(
                f"{name:31} {med * 1e3:11.1f} {min(wall) * 1e3:6.1f} {med / base:6.2f}"
                f" {(med - base) * 1e3:6.1f} {med_cpu * 1e3:11.1f} {(med_cpu - base_cpu) * 1e3:6.1f}"
            )
        if opts.top:
            print(f"\nlargest self import times (us) of `import fpvm.ignition`, {python}:")
            for self_us, cum_us, name in import_top(python, env, opts.top):
                print(f"{self_us:8} {cum_us:9}  {name.strip()}")
        best = in_process_parse(site, opts.config, 50)
        print(f"\nparse({opts.config.name}) in process, best of 50: {best * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
