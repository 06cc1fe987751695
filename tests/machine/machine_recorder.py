"""A recording stand-in for a real qemu-system-*/virtiofsd: writes what it was started with, exits 0.

``record.json`` beside the script: argv after argv[0] and the environment as hex of the raw bytes
(any byte survives JSON), and the cwd.
The kernel replaces argv[0] of a ``#!`` script with the script's path, so argv[0] is not recorded.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    # /proc/self/environ: the environment as started (python3 may add LC_CTYPE to its own, PEP 538)
    with open("/proc/self/environ", "rb") as fh:
        env = [item.partition(b"=") for item in fh.read().split(b"\0") if item]
    record = {
        "argv": [os.fsencode(a).hex() for a in sys.argv[1:]],
        "env": {k.hex(): v.hex() for k, _, v in env},
        "cwd": os.getcwd(),
    }
    out = Path(sys.argv[0]).resolve().parent / "record.json"
    out.write_text(json.dumps(record), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
