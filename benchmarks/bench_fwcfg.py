"""How fast fw_cfg reads are: measured through QMP, estimated for /dev/io from ioctl counts.

Run: ``.venv/bin/python benchmarks/bench_fwcfg.py [--size 65536]``.

* QMP: a real ``qemu-system-x86_64 -machine pc -accel tcg -S`` with one ``-fw_cfg`` entry of ``--size``
  random bytes; the entry is read through ``fpvm.fwcfg.open_device(qmp=...)`` and compared.
* /dev/io: FreeBSD is not available here, so the number of IODEV_PIO ioctls for the same read is
  counted with a counting device, the host-side cost of one ioctl (a real ``ioctl(2)`` syscall plus
  the struct packing the transport does) is measured, and the total is given for a range of assumed
  costs of the VM exit each port access causes (the part that cannot be measured without FreeBSD).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

from fpvm.fwcfg import devio, open_device
from fpvm.fwcfg.protocol import RegisterDevice

NAME = "opt/com.coreos/config"
ASSUMED_EXIT_US = (5.0, 20.0, 50.0)


def _start(workdir: Path, payload: Path) -> tuple[subprocess.Popen[bytes], str]:
    sock = workdir / "qmp.sock"
    argv = ["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-S", "-nodefaults", "-display", "none"]
    argv += ["-qmp", f"unix:{sock},server=on,wait=off", "-fw_cfg", f"name={NAME},file={payload}"]
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sock.exists():
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(sock))
                    probe.makefile("rb").readline()
                return process, str(sock)
            except OSError:
                pass
        time.sleep(0.05)
    process.kill()
    raise SystemExit("QEMU did not open its QMP socket")


def bench_qmp(size: int) -> float:
    with tempfile.TemporaryDirectory(prefix="fpvm-bench.") as tmp:
        payload = Path(tmp) / "payload"
        data = os.urandom(size)
        payload.write_bytes(data)
        process, sock = _start(Path(tmp), payload)
        try:
            device = open_device(sock)
            device.list()  # the directory read is not part of the entry's throughput
            start = time.perf_counter()
            got = device.read(NAME)
            elapsed = time.perf_counter() - start
            device.close()
        finally:
            process.kill()
            process.wait()
    if got != data:
        raise SystemExit("QMP read returned different bytes")
    return elapsed


class CountingIo:
    """Counts IODEV_PIO requests and answers like fw_cfg's ports, for an entry of ``size`` bytes."""

    def __init__(self, size: int) -> None:
        self.count = 0
        self.key = 0
        self.items = {
            0: b"QEMU",
            0x19: struct.pack(">I", 1) + struct.pack(">IHH56s", size, 0x20, 0, NAME.encode()),
            0x20: bytes(size),
        }
        self.cursor = 0

    def ioctl(self, request: int, buf: bytearray) -> None:
        self.count += 1
        access, port, width, value = devio.PIO_REQ.unpack(buf)
        if access == devio.IODEV_PIO_WRITE:
            self.key, self.cursor = value, 0
        else:
            item = self.items.get(self.key, b"")
            byte = item[self.cursor] if self.cursor < len(item) else 0
            self.cursor += 1
            devio.PIO_REQ.pack_into(buf, 0, access, port, width, byte)

    def close(self) -> None:
        pass


def ioctl_cost_us(rounds: int = 200_000) -> float:
    """One real ioctl syscall (FIONREAD on a pipe) plus the transport's pack/unpack, in microseconds."""
    read_end, write_end = os.pipe()
    buf = bytearray(devio.PIO_REQ.size)
    try:
        start = time.perf_counter()
        for _ in range(rounds):
            devio.PIO_REQ.pack_into(buf, 0, 0, devio.DATA_PORT, 1, 0)
            fcntl.ioctl(read_end, termios.FIONREAD, buf, True)
            devio.PIO_REQ.unpack(buf)
        return (time.perf_counter() - start) / rounds * 1e6
    finally:
        os.close(read_end)
        os.close(write_end)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64 * 1024, help="entry size in bytes (default 64 KiB)")
    args = parser.parse_args()

    elapsed = bench_qmp(args.size)
    print(f"QMP:     {args.size} bytes in {elapsed:.2f} s = {args.size / elapsed:,.0f} bytes/s")

    counter = CountingIo(args.size)
    device = RegisterDevice(devio.DevIoTransport(counter))
    opened = counter.count
    device.list()
    listed = counter.count
    device.read(NAME)
    for_entry = counter.count - listed
    print(
        f"/dev/io: {opened} ioctls to check the signature, {listed - opened} for a 1-entry directory, "
        f"{for_entry} for the entry ({for_entry / args.size:.5f} ioctls per byte)"
    )
    host_us = ioctl_cost_us()
    print(f"/dev/io: host-side cost per ioctl here (syscall + struct packing): {host_us:.2f} us")
    for exit_us in ASSUMED_EXIT_US:
        seconds = counter.count * (host_us + exit_us) / 1e6
        print(
            f"/dev/io: assuming {exit_us:>4.0f} us per port-I/O VM exit: {seconds:.2f} s for everything, "
            f"{args.size / seconds:,.0f} bytes/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
