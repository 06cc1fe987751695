"""How long `fpvm guest provision` takes at boot, next to the interpreter's own start-up.

Run: ``.venv/bin/python benchmarks/bench_provision.py [--runs 15] [--python python3]``.

What is measured (wall clock, median and best of ``--runs``; each run is a fresh process on a fresh
staged root, commands recorded, no readiness step):

* ``python3 -c pass`` - the interpreter alone;
* ``python3 -m fpvm guest provision`` with podman's own config (the newest qemu fixture) - the full CLI;
* ``python3 -m fpvm.guest provision`` - the agent's own entry (parsers of the other areas not built);
* the same again on the already provisioned root (what every later boot costs);
* generated configs with 1 000 .. 10 000 files, to show that time grows linearly with the config.

The package is copied to a temporary directory and byte-compiled first, as it is in the image
(the test environment sets PYTHONDONTWRITEBYTECODE, which would otherwise make every run recompile).

Staged roots live on tmpfs (``--dir``, default /dev/shm) so that the figures are the agent's own
work; ``fpvm.fsutil.atomic_write`` fsyncs each file and its directory (two fsyncs per file), which
on a real disk adds the disk's fsync latency per file: the podman config is also timed on ``--disk-dir``
(default: the system temporary directory) to show that part.
"""

from __future__ import annotations

import argparse
import compileall
import json
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
PODMAN_CONFIG = REPO / "tests/fixtures/podman-ignition/v5.8.2-qemu.ign"

MASTER_PASSWD = "root::0:0::0:0:Charlie &:/root:/bin/sh\noperator:*:2:5::0:0:System &:/:/usr/sbin/nologin\n"
GROUP = "wheel:*:0:root\noperator:*:5:root\n"


def stage_root(base: Path) -> Path:
    """A minimal FreeBSD-shaped root (accounts, /home -> usr/home, podman's binary)."""
    root = base / "root"
    for d in ("etc", "root", "usr/home", "usr/local/bin", "bin", "var/db", "var/log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "home").symlink_to("usr/home")
    (root / "etc/master.passwd").write_text(MASTER_PASSWD)
    (root / "etc/passwd").write_text(MASTER_PASSWD.replace("root::", "root:*:"))
    (root / "etc/group").write_text(GROUP)
    (root / "bin/sh").write_bytes(b"")
    (root / "usr/local/bin/podman").write_bytes(b"")
    return root


def generated_config(n: int) -> bytes:
    files = [
        {"path": f"/srv/gen/d{i // 100}/f{i}", "mode": 420, "contents": {"source": f"data:,file%20{i}%0A"}}
        for i in range(n)
    ]
    cfg = {
        "ignition": {"version": "3.2.0"},
        "passwd": {"users": [{"name": "core", "uid": 501, "sshAuthorizedKeys": ["ssh-ed25519 AAAA k"]}]},
        "storage": {"files": files},
    }
    return json.dumps(cfg).encode()


CPU: list[float] = []  # CPU seconds (user + system) of each timed child, in order


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Wall time of one run; its CPU time goes to CPU (less sensitive to a busy machine)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {res.stderr.decode(errors='replace')}")
    return took


def series(make_argv: object, runs: int, env: dict[str, str]) -> list[float]:
    assert callable(make_argv)
    del CPU[:]
    return [timed(make_argv(i), env) for i in range(runs)]


def show(label: str, times: list[float]) -> None:
    med, best, cpu = statistics.median(times), min(times), statistics.median(CPU)
    print(
        f"{label:58} wall median {med * 1000:7.1f} ms  best {best * 1000:7.1f} ms  cpu {cpu * 1000:7.1f} ms"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--python", default=sys.executable, help="interpreter to measure (default: this one)")
    ap.add_argument("--sizes", default="1000,2500,5000,10000", help="file counts of the generated configs")
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    ap.add_argument("--dir", default=shm, help="where staged roots live (default /dev/shm: tmpfs)")
    ap.add_argument("--disk-dir", default=tempfile.gettempdir(), help="a disk-backed directory")
    args = ap.parse_args()
    py = args.python
    with (
        tempfile.TemporaryDirectory(prefix="fpvm-bench.", dir=args.dir) as tmp,
        tempfile.TemporaryDirectory(prefix="fpvm-bench.", dir=args.disk_dir) as disk_tmp,
    ):
        work = Path(tmp)
        pkg = work / "lib"
        shutil.copytree(REPO / "src/fpvm", pkg / "fpvm")
        compileall.compile_dir(str(pkg), quiet=1)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
        env["PYTHONPATH"] = str(pkg)
        config = work / "podman.ign"
        config.write_bytes(PODMAN_CONFIG.read_bytes())

        roots = [stage_root(work / f"r{i}") for i in range(args.runs * 2)]
        print(f"python: {py}   runs: {args.runs}   cpus: {os.cpu_count()}   config: {PODMAN_CONFIG.name}")
        print(f"staged roots in {work}; load average before: {os.getloadavg()[0]:.1f}")
        bare = series(lambda i: [py, "-c", "pass"], args.runs, env)
        show("python3 -c pass", bare)

        def provision(entry: list[str], root: Path, rec: str) -> list[str]:
            return [
                py,
                *entry,
                "provision",
                "--root",
                str(root),
                "--config",
                str(config),
                "--record",
                rec,
                "--no-ready",
            ]

        full = series(
            lambda i: provision(["-m", "fpvm", "guest"], roots[i], f"{work}/rec{i}"), args.runs, env
        )
        show("fpvm guest provision (podman config, fresh root)", full)
        own = series(
            lambda i: provision(["-m", "fpvm.guest"], roots[args.runs + i], f"{work}/recb{i}"), args.runs, env
        )
        show("python3 -m fpvm.guest provision (fresh root)", own)
        again = series(lambda i: provision(["-m", "fpvm.guest"], roots[i], f"{work}/rec{i}"), args.runs, env)
        show("python3 -m fpvm.guest provision (already provisioned)", again)
        disk_roots = [stage_root(Path(disk_tmp) / f"r{i}") for i in range(args.runs)]
        on_disk = series(
            lambda i: provision(["-m", "fpvm.guest"], disk_roots[i], f"{disk_tmp}/rec{i}"), args.runs, env
        )
        show(f"python3 -m fpvm.guest provision (fresh root on {args.disk_dir})", on_disk)
        (roots[0] / "mnt").mkdir(exist_ok=True)
        shim = series(
            lambda i: [
                py,
                "-m",
                "fpvm",
                "guest",
                "shim",
                "--record",
                f"{work}/shim{i}",
                "--root",
                str(roots[0]),
                "mount",
                "-t",
                "9p",
                "-o",
                "trans=virtio",
                "vol0",
                "/mnt",
                "-o",
                "version=9p2000.L,msize=131072",
            ],
            args.runs,
            env,
        )
        show("fpvm guest shim mount -t 9p … (podman's ssh command)", shim)
        base = statistics.median(bare)
        own_ms = 1000 * (statistics.median(own) - base)
        full_ms = 1000 * (statistics.median(full) - base)
        print(f"agent's own cost over the interpreter: {own_ms:.1f} ms (full CLI: {full_ms:.1f} ms)")

        print("\nlinear growth (fresh root each, median of 3):")
        points: list[tuple[int, float]] = []
        for n in (int(s) for s in args.sizes.split(",")):
            cfg = work / f"gen{n}.ign"
            cfg.write_bytes(generated_config(n))
            times = []
            del CPU[:]
            for k in range(3):
                root = stage_root(work / f"g{n}-{k}")
                argv = [py, "-m", "fpvm.guest", "provision", "--root", str(root), "--config", str(cfg)]
                times.append(timed([*argv, "--record", f"{work}/g{n}-{k}.rec", "--no-ready"], env))
            med = statistics.median(times)
            points.append((n, med))
            per_file = (med - statistics.median(bare)) / n * 1e6
            cpu = statistics.median(CPU)
            line = f"  {n:6d} files: wall {med * 1000:8.1f} ms ({per_file:6.1f} us/file)"
            print(f"{line}  cpu {cpu * 1000:8.1f} ms")
        if len(points) >= 2:
            (n0, t0), (n1, t1) = points[0], points[-1]
            print(f"  slope {(t1 - t0) / (n1 - n0) * 1e6:.1f} us per extra file")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
