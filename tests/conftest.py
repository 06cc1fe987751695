"""Fixtures every area's tests share. Constants and functions live in importable helper modules
(fpvm_support.py, fpvm_runner.py): several folders have a conftest.py of their own, so a test never
imports from a conftest."""

from __future__ import annotations

from pathlib import Path

import pytest

from fpvm_support import FIXTURES


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"podman fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(autouse=True)
def _no_host_gvproxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a gvproxy installed on the host: those that want one pass it explicitly."""
    monkeypatch.setattr("fpvm.machine.qemu.find_gvproxy", lambda: None)
