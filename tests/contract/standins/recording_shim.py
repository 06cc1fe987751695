"""``fpvm guest shim --record FILE --root DIR NAME ARGS`` whose recording runner knows the VM's 9p devices.

In record mode a FreeBSD command is written to FILE and "succeeds" with no output, so a query has no
answer. One query decides what a podman 5.2+ ``mount -t virtiofs TAG DIR`` does:
``/sbin/sysctl -e dev.virtio_p9fs``, which lists the virtio-9p devices the host gave the VM. The
stand-in QEMU writes those devices (tag, folder, read-only) to the harness's ``p9_devices`` file; this
runner records that query like every other command and answers it as FreeBSD's sysctl(8) would with
the virtio_p9fs driver loaded: ``dev.virtio_p9fs.<unit>.p9fs_mount_tag=<tag>`` lines (plus the device's
``%desc``/``%driver``/``%parent``), or, with no 9p device, ``unknown oid`` and status 1 (the node exists
only when a device attached). Every other command is recorded and "succeeds", as before.

The command line goes through fpvm's own CLI (``fpvm.cli.main``, as ``python3 -m fpvm`` would run it),
unchanged: only the class the shim records with is this one. Standard library only (the guest side
runs on the system python3 with fpvm's sources).
Usage: ``python3 recording_shim.py HARNESS_JSON guest shim --record FILE --root DIR NAME ARGS...``
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fpvm.cli import main
from fpvm.guest.compat import base
from fpvm.guest.mounts import SYSCTL_TAGS_ARGV
from fpvm.guest.runner import RecordingRunner, Result


def sysctl_answer(devices: list[dict[str, Any]]) -> Result:
    """``sysctl -e dev.virtio_p9fs`` on a FreeBSD guest with these virtio 9p devices."""
    if not devices:
        return Result(1, b"", b"sysctl: unknown oid 'dev.virtio_p9fs'\n")
    lines = []
    for dev in devices:
        n = dev["unit"]
        lines += [
            f"dev.virtio_p9fs.{n}.p9fs_mount_tag={dev['tag']}",
            f"dev.virtio_p9fs.{n}.%parent=virtio_pci{n + 1}",
            f"dev.virtio_p9fs.{n}.%driver=virtio_p9fs",
            f"dev.virtio_p9fs.{n}.%desc=VirtIO 9P Transport",
        ]
    return Result(0, ("\n".join(lines) + "\n").encode(), b"")


class VmRecordingRunner(RecordingRunner):
    """A RecordingRunner that also answers the one 9p-device query from the stand-in QEMU's devices."""

    devices_file: str = ""

    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True) -> Result:
        result = super().run(argv, input=input, check=check)
        if list(argv) != SYSCTL_TAGS_ARGV:
            return result
        try:
            devices = json.loads(Path(self.devices_file).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            devices = []  # no VM started (or one without 9p devices): no dev.virtio_p9fs node
        return sysctl_answer(devices)


def run(harness_json: str, argv: list[str]) -> int:
    cfg: dict[str, Any] = json.loads(Path(harness_json).read_text(encoding="utf-8"))
    VmRecordingRunner.devices_file = cfg.get("p9_devices", "")
    base.RecordingRunner = VmRecordingRunner  # type: ignore[misc]  # Shim.make records with this class
    return main(argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2:]))
