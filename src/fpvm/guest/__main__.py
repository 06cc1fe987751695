"""``python3 -m fpvm.guest COMMAND ...``: the agent's commands, as ``fpvm guest COMMAND ...``.

The rc.d scripts use this entry so the boot path needs no console script on PATH; ``fpvm.cli``
builds only the guest's parsers for a ``guest`` command, so this costs no more than the agent itself.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from fpvm.cli import main as fpvm_main


def main(argv: Sequence[str] | None = None) -> int:
    return fpvm_main(["guest", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
