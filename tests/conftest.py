"""Fixtures every area's tests share. Constants live in importable helper modules (podman_fixtures.py):
several folders have a conftest.py of their own, so ``from conftest import`` would pick the wrong one."""

from __future__ import annotations

from pathlib import Path

import pytest

from podman_fixtures import FIXTURES


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"podman fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(autouse=True)
def _no_host_gvproxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a gvproxy installed on the host: those that want one pass it explicitly."""
    monkeypatch.setattr("fpvm.machine.qemu.find_gvproxy", lambda: None)
