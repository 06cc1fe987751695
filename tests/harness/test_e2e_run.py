"""tests/e2e/run: every step and its budget in --dry-run, and a failing step leaves its evidence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "tests" / "e2e" / "run"
STEPS = ["build", "machine-init", "machine-start", "freebsd-checks", "podman-run", "shared-folder",
         "machine-stop", "podman-machine"]  # fmt: skip


def _env(tmp_path: Path) -> dict[str, str]:
    """A private HOME/XDG so that no machine or podman state of the user's is touched."""
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
            "XDG_RUNTIME_DIR": str(tmp_path / "run"), "XDG_CONFIG_HOME": str(home / "config")}  # fmt: skip


def test_dry_run_prints_every_step_with_its_budget_and_writes_nothing(tmp_path: Path) -> None:
    artefacts = tmp_path / "artefacts"
    argv = [sys.executable, str(RUN), "--dry-run", "--arch", "arm64", "--artefacts", str(artefacts)]
    res = subprocess.run(argv, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    headers = [line for line in res.stdout.split("\n") if line.startswith("== ")]
    assert [h.split()[1] for h in headers] == STEPS
    assert all("(budget " in h and " s):" in h for h in headers)
    assert "--arch aarch64" in res.stdout and "--method builder-vm" in res.stdout
    assert "pytest" in res.stdout and "tests/freebsd" in res.stdout
    assert not artefacts.exists()


def test_a_failing_step_stops_the_run_and_keeps_the_evidence(tmp_path: Path) -> None:
    artefacts = tmp_path / "artefacts"
    missing = tmp_path / "no-such-image.raw.zst"
    argv = [sys.executable, str(RUN), "--skip-build", str(missing), "--artefacts", str(artefacts)]
    res = subprocess.run(argv, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert "FAILED machine-init" in res.stderr
    figures = json.loads((artefacts / "figures.json").read_text())
    assert figures["failed_step"] == "machine-init" and "step_build_seconds" in figures
    assert "machine init e2e" in (artefacts / "commands.log").read_text()
    assert "== machine-start" not in res.stdout
