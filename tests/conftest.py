"""Shared test fixtures: where the podman fixtures live, and the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Captured podman output (data) lives in the repository: a fresh clone needs nothing beside it.
FIXTURES = REPO / "tests" / "fixtures"
PODMAN_IGNITION = FIXTURES / "podman-ignition"
PODMAN_CAPTURE = FIXTURES / "podman-4.3.1-qemu-capture"


def podman_ignition_configs() -> list[Path]:
    """Every Ignition config podman produced: per-version fixtures plus the 4.3.1 capture."""
    return [*sorted(PODMAN_IGNITION.glob("*.ign")), PODMAN_CAPTURE / "machine.ign"]


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"podman fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(autouse=True)
def _no_host_gvproxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a gvproxy installed on the host: those that want one pass it explicitly."""
    monkeypatch.setattr("fpvm.machine.qemu.find_gvproxy", lambda: None)
