"""Run one command and reap whatever it leaves behind, as init does on a host.

podman starts gvproxy, virtiofsd and QEMU and exits; they outlive it. On a host, init (systemd) reaps
them the moment they exit. ``podman machine stop`` (5.x) kills gvproxy and gives it about 250 ms to
be gone: a process that exited but was not reaped yet still counts as running, and stop fails with
"unable to clean up gvproxy: process N has not ended". The init of a test sandbox may reap late, so
the harness runs podman under this: a child-subreaper (prctl ``PR_SET_CHILD_SUBREAPER``) that waits
for the command, hands back its exit status, lets go of the caller's stdin/stdout/stderr and stays
until the last process the command left behind has exited, reaping each one at once.

The process the caller started exits with the command's status as soon as the command ended.
Standard library only. Usage: ``python3 subreaper.py COMMAND ARGS...``
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_CHILD_SUBREAPER = 36


def keeper(argv: list[str], report: int) -> None:
    """The subreaper: run ``argv``, write its status to ``report``, reap orphans until none is left."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        os.write(2, b"subreaper: prctl(PR_SET_CHILD_SUBREAPER) failed\n")
    pid = os.fork()
    if pid == 0:
        os.close(report)
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(2, f"subreaper: {argv[0]}: {exc.strerror}\n".encode())
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    os.write(report, str(code if code >= 0 else 128 - code).encode())
    os.close(report)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)  # the caller reads our stdout/stderr until EOF: release them now
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
    os._exit(0)


def main() -> int:
    argv = sys.argv[1:]
    if not argv:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        keeper(argv, w)
    os.close(w)
    data = b""
    while chunk := os.read(r, 64):
        data += chunk
    return int(data) if data else 1


if __name__ == "__main__":
    sys.exit(main())
