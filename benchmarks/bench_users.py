"""How provisioning time and memory grow with the number of users in the config.

Run: ``.venv/bin/python benchmarks/bench_users.py [--sizes 1000,10000,100000] [--keys] [--dir /dev/shm]``.

Each size runs ``fpvm.guest.provision.main`` in a fresh process on a fresh staged root (FreeBSD's base
accounts, commands recorded as on an image build: the agent stages what pw would write), twice: the
first run creates every account (one ``pw useradd`` recorded each, home directories created), the
second finds them all and changes nothing. Reported per size: wall time of each run, time per user,
the child's peak RSS, and at the end the ratio of times between consecutive sizes (10x users should
cost at most 12x time: linear) and the memory added per user.

Users are ``u0 .. uN-1``, half of them in podman's ``sudo`` group (wheel: one group line with N/2
members), nine in ten with an explicit uid (from 40 000 up), every tenth with a uid pw allocates
(from 1 000 up: pw.conf's ``maxuid`` 32 000 bounds those, hence not all of them). ``--keys`` gives
each an SSH key (then ``~/.ssh`` and ``authorized_keys`` are written for each: file-system work more
than account work). ``--no-homes`` sets ``noCreateHome`` for every user: creating 100 000
directories in one directory is itself not linear in the kernel (on this host's tmpfs, a bare
``mkdir`` loop takes 15x the time for 10x the entries), so this shows the agent's own scaling.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fpvm_support import write_accounts  # noqa: E402

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIY13ql7ogiegYHHFbAKgAnlG//v6FRNqeCt518RJC8p bench@host"

CHILD = """
import os, resource, sys, time
from fpvm.guest.provision import main
root, config, record = sys.argv[1:4]
t = time.perf_counter()
with open(os.devnull, "w") as out:
    status = main(root, config, record, True, out)
elapsed = time.perf_counter() - t
print(status, elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def stage_root(base: Path) -> Path:
    root = base / "root"
    for d in ("etc", "root", "usr/home", "usr/local/bin", "bin", "var/db", "var/log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "home").symlink_to("usr/home")
    write_accounts(root)
    (root / "bin/sh").write_bytes(b"")
    return root


def config(n: int, keys: bool, homes: bool = True) -> bytes:
    users = []
    for i in range(n):
        user: dict[str, object] = {"name": f"u{i}"}
        if not homes:
            user["noCreateHome"] = True
        if i % 2 == 0:
            user["groups"] = ["sudo"]
        if i % 10:  # nine in ten have the host's uid; every tenth gets one from pw's allocator
            user["uid"] = 40000 + i
        if keys:
            user["sshAuthorizedKeys"] = [KEY]
        users.append(user)
    return json.dumps({"ignition": {"version": "3.2.0"}, "passwd": {"users": users}}).encode()


def run_once(root: Path, cfg: Path, record: Path) -> tuple[float, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(cfg), str(record)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.split()
    status, elapsed, rss_kib = int(out[0]), float(out[1]), int(out[2])
    if status != 0:
        raise SystemExit(f"provision exited {status}")
    return elapsed, rss_kib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--keys", action="store_true", help="give every user an SSH key")
    parser.add_argument(
        "--no-homes",
        action="store_true",
        help="noCreateHome for every user: the account work alone, without 100 000 mkdir(2) in one directory",
    )
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[tuple[int, float, float, int]] = []
    print(f"{'users':>8} {'first run s':>12} {'us/user':>8} {'second run s':>13} {'peak RSS MiB':>13}")
    for n in sizes:
        base = Path(tempfile.mkdtemp(prefix="fpvm-bench-users-", dir=args.dir))
        try:
            root = stage_root(base)
            cfg = base / "config.ign"
            cfg.write_bytes(config(n, args.keys, not args.no_homes))
            first, rss1 = run_once(root, cfg, base / "record.jsonl")
            recorded = sum(1 for _ in (base / "record.jsonl").open())
            assert recorded == n, f"{recorded} commands recorded for {n} users"
            second, rss2 = run_once(root, cfg, base / "record.jsonl")
            assert sum(1 for _ in (base / "record.jsonl").open()) == n, "the second run recorded commands"
        finally:
            shutil.rmtree(base, ignore_errors=True)
        rss = max(rss1, rss2)
        rows.append((n, first, second, rss))
        print(f"{n:>8} {first:>12.2f} {first / n * 1e6:>8.1f} {second:>13.2f} {rss / 1024:>13.1f}")
    ok = True
    for (n0, t0, s0, r0), (n1, t1, s1, r1) in itertools.pairwise(rows):
        factor = n1 / n0
        ratio, ratio2 = t1 / t0, s1 / s0
        linear = ratio <= factor * 1.2 and ratio2 <= factor * 1.2
        ok &= linear
        per_user = (r1 - r0) * 1024 / (n1 - n0)
        print(
            f"{n0} -> {n1} users ({factor:.0f}x): first run {ratio:.1f}x, second run {ratio2:.1f}x time"
            f" ({'linear' if linear else 'NOT linear'}); {per_user:.0f} bytes of peak RSS per added user"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
