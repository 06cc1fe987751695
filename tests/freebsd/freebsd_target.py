"""Where the FreeBSD checks run: this machine (FreeBSD, as root) or a booted fpvm VM over ssh.

The checks in tests/freebsd are written once against a small interface (run a shell command, read a
file) so that the same test answers the question natively on a FreeBSD host, inside the VM, and from the
host of a booted VM. The transport is chosen from the environment:

* ``FPVM_TARGET=ssh://USER@HOST:PORT`` (and ``FPVM_TARGET_KEY=PATH`` for the private key): every command
  runs through OpenSSH's ``ssh`` in batch mode. This is what tests/e2e/run uses against ``fpvm machine``.
* no ``FPVM_TARGET`` and this machine is FreeBSD: commands run here, through ``/bin/sh``.
* otherwise there is no target, and ``unavailable()`` says why (the tests are skipped with that reason).
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import urllib.parse
from dataclasses import dataclass, field

TIMEOUT = 120.0
SKIP_HINT = (
    "run as root on FreeBSD 15.x (`pytest tests/freebsd`), or point FPVM_TARGET=ssh://root@127.0.0.1:PORT "
    "and FPVM_TARGET_KEY=KEY at a booted fpvm VM (tests/e2e/run does)"
)


class TargetError(Exception):
    """The target could not be reached at all (as opposed to a command that failed on it)."""


@dataclass
class Target:
    """One system to check. ``argv_prefix`` is empty for this machine, an ssh command line otherwise."""

    description: str
    argv_prefix: list[str] = field(default_factory=list)

    def run(self, script: str, *, input: bytes | None = None, timeout: float = TIMEOUT) -> Result:
        """Run ``script`` with the target's /bin/sh; never raises for a non-zero exit."""
        argv = [*self.argv_prefix, script] if self.argv_prefix else ["/bin/sh", "-c", script]
        try:
            done = subprocess.run(argv, input=input, capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TargetError(f"{self.description}: {exc}") from exc
        if self.argv_prefix and done.returncode == 255:
            # ssh itself failed (connection refused, key refused): not an answer from the target.
            why = done.stderr.decode(errors="replace").strip()
            raise TargetError(f"{self.description}: ssh failed: {why}")
        return Result(done.returncode, done.stdout, done.stderr)

    def check(self, script: str, *, input: bytes | None = None, timeout: float = TIMEOUT) -> str:
        """Run ``script`` and return its standard output as text; fail with both streams if it fails."""
        res = self.run(script, input=input, timeout=timeout)
        if res.status != 0:
            raise AssertionError(
                f"on {self.description}: `{script}` exited {res.status}\n"
                f"stdout: {res.text}\nstderr: {res.stderr.decode(errors='replace')}"
            )
        return res.text

    def read(self, path: str) -> bytes:
        res = self.run(f"cat -- {shlex.quote(path)}")
        if res.status != 0:
            why = res.stderr.decode(errors="replace")
            raise AssertionError(f"on {self.description}: cannot read {path}: {why}")
        return res.stdout

    def exists(self, path: str) -> bool:
        return self.run(f"test -e {shlex.quote(path)} || test -L {shlex.quote(path)}").status == 0


@dataclass(frozen=True)
class Result:
    status: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")


def ssh_prefix(url: str, key: str | None) -> list[str]:
    """The ssh command line for ``ssh://USER@HOST:PORT``; host keys are not pinned (a fresh VM each run)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname:
        raise TargetError(f"FPVM_TARGET must look like ssh://root@127.0.0.1:2222, not {url!r}")
    argv = [
        "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=15", "-p", str(parts.port or 22),
    ]  # fmt: skip
    if key:
        argv += ["-i", key, "-o", "IdentitiesOnly=yes"]
    return [*argv, f"{parts.username or 'root'}@{parts.hostname}", "--"]


def from_environment(environ: dict[str, str] | None = None) -> Target | None:
    """The target the environment names, this machine if it is FreeBSD, else None."""
    env = os.environ if environ is None else environ
    url = env.get("FPVM_TARGET", "")
    if url:
        return Target(url, ssh_prefix(url, env.get("FPVM_TARGET_KEY") or None))
    if platform.system() == "FreeBSD":
        return Target(f"this machine ({platform.node()})")
    return None


def unavailable(target: Target | None) -> str | None:
    """Why the FreeBSD checks cannot run against ``target`` (None when they can)."""
    if target is None:
        return f"needs a live FreeBSD system: {SKIP_HINT}"
    try:
        system = target.check("uname -s").strip()
    except (TargetError, AssertionError) as exc:
        return f"cannot reach the target: {exc}"
    if system != "FreeBSD":
        system = system or "an unknown system"
        return f"the target {target.description} runs {system}, not FreeBSD: {SKIP_HINT}"
    if target.check("id -u").strip() != "0":
        return f"the target {target.description} must be reached as root"
    return None
