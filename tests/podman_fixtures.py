"""Where the captured podman data lives (tests/fixtures/): imported by tests, never ``from conftest``.

A fresh clone needs nothing beside it: every file a test reads is in the repository.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
PODMAN_IGNITION = FIXTURES / "podman-ignition"
PODMAN_CAPTURE = FIXTURES / "podman-4.3.1-qemu-capture"


def podman_ignition_configs() -> list[Path]:
    """Every Ignition config podman produced: per-version fixtures plus the 4.3.1 capture."""
    return [*sorted(PODMAN_IGNITION.glob("*.ign")), PODMAN_CAPTURE / "machine.ign"]
