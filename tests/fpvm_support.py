"""Test data every area shares: where the captured podman data lives, FreeBSD's base accounts.

A fresh clone needs nothing beside it: every file a test reads is in the repository (tests/fixtures/).

FreeBSD base accounts for staged roots: a real image has ``etc/master.passwd`` and ``etc/group`` from
FreeBSD-set-minimal; the overlay and the Ignition config do not, so every staged root needs them. The
text is a subset of freebsd-src ``etc/master.passwd`` and ``etc/group`` (root, toor, daemon, operator,
nobody; wheel, operator ...). Kept here, beside tests/conftest.py (whose folder pytest puts on sys.path),
so the guest and the integration tests use one copy without importing each other's helpers.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
PODMAN_IGNITION = FIXTURES / "podman-ignition"
PODMAN_CAPTURE = FIXTURES / "podman-4.3.1-qemu-capture"


def podman_ignition_configs() -> list[Path]:
    """Every Ignition config podman produced: per-version fixtures plus the 4.3.1 capture."""
    return [*sorted(PODMAN_IGNITION.glob("*.ign")), PODMAN_CAPTURE / "machine.ign"]


MASTER_PASSWD = """\
root::0:0::0:0:Charlie &:/root:/bin/sh
toor:*:0:0::0:0:Bourne-again Superuser:/root:
daemon:*:1:1::0:0:Owner of many system processes:/root:/usr/sbin/nologin
operator:*:2:5::0:0:System &:/:/usr/sbin/nologin
nobody:*:65534:65534::0:0:Unprivileged user:/nonexistent:/usr/sbin/nologin
"""

GROUP = """\
wheel:*:0:root
daemon:*:1:
kmem:*:2:
sys:*:3:
tty:*:4:
operator:*:5:root
staff:*:20:
nogroup:*:65533:
nobody:*:65534:
"""


def passwd_from_master(master: str) -> str:
    """The public etc/passwd that pwd_mkdb(8) derives: password hidden, class/change/expire dropped."""
    out = []
    for line in master.splitlines():
        f = line.split(":")
        out.append(":".join([f[0], "*", f[2], f[3], f[7], f[8], f[9]]))
    return "\n".join(out) + "\n"


def write_accounts(root: Path) -> None:
    """etc/master.passwd (0600, as on FreeBSD), etc/passwd and etc/group of the base system."""
    (root / "etc/master.passwd").write_text(MASTER_PASSWD)
    os.chmod(root / "etc/master.passwd", 0o600)
    (root / "etc/passwd").write_text(passwd_from_master(MASTER_PASSWD))
    (root / "etc/group").write_text(GROUP)


class Hung(BaseException):
    """Not an Exception (nor an OSError): no handler in the code under test may swallow it."""


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Turn a hang (a FIFO opened for reading or writing) into a test failure."""

    def fire(signum: int, frame: object) -> None:
        raise Hung(f"still running after {seconds} s: it hangs")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
