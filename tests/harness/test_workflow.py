"""The GitHub Actions workflow is valid before it ever runs: schema, shell syntax, and what it calls.

actionlint's PyPI wrapper downloads its binary at install time, which this project's machines cannot do;
check-jsonschema ships SchemaStore's GitHub workflow schema inside its wheel, and bash checks each step.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert tool, "check-jsonschema is a test dependency (pip install -e '.[test]')"
    return subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True)  # fmt: skip


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(path.read_text())
    return data


def test_there_is_a_workflow() -> None:
    assert [p.name for p in WORKFLOWS] == ["ci.yml"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_schema(path: Path) -> None:
    res = _check_jsonschema(path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    text = WORKFLOWS[0].read_text()
    broken.write_text(text.replace("runs-on: ubuntu-24.04\n", "runs_on: ubuntu-24.04\n", 1))
    assert _check_jsonschema(broken).returncode != 0


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_run_step_is_valid_bash(path: Path) -> None:
    for job_name, job in _load(path)["jobs"].items():
        for step in job.get("steps", []):
            if "run" not in step:
                continue
            script = re.sub(r"\$\{\{[^}]*\}\}", "EXPR", step["run"])
            res = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
            assert res.returncode == 0, f"{job_name}: {step.get('name')}: {res.stderr}"


def test_ci_jobs_call_the_projects_own_commands() -> None:
    jobs = _load(WORKFLOWS[0])["jobs"]
    runs = {name: "\n".join(s.get("run", "") for s in job["steps"]) for name, job in jobs.items()}
    assert "bash .ci/run" in runs["test"]
    assert "tests/e2e/run" in runs["e2e"]
    assert "fpvm build" in runs["release"] and "sha256" in runs["release"]
    assert (REPO / "tests" / "e2e" / "run").stat().st_mode & 0o111
