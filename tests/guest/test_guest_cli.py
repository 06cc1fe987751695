"""`fpvm guest` registration: options reach the handlers untouched; the agent's own entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from guest_support import REPO, make_root

from fpvm_runner import run_fpvm
from fpvm_support import PODMAN_CAPTURE


def test_shim_gets_every_word_after_shim(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    rec = tmp_path / "rec.jsonl"
    res = run_fpvm("guest", "shim", "--record", str(rec), "--root", str(tmp_path), "mount", "-t", "9p", "-o",
                   "trans=virtio", "vol0", "/mnt", "-o", "version=9p2000.L,msize=131072")  # fmt: skip
    assert res.returncode == 0, res.stderr
    argvs = [json.loads(line)["argv"] for line in rec.read_text().splitlines()]
    assert argvs[-1] == ["/sbin/mount", "-t", "p9fs", "vol0", "/mnt"]


def test_ready_and_boot_take_their_own_options() -> None:
    for cmd, option in (("ready", "--port"), ("boot", "--firstboot")):
        res = run_fpvm("guest", cmd, "--help")
        assert res.returncode == 0 and option in res.stdout, res.stderr


def test_boot_provisions_from_a_config_file(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    rec = tmp_path / "rec.jsonl"
    res = run_fpvm("guest", "boot", "--root", str(root), "--config", str(PODMAN_CAPTURE / "machine.ign"),
                   "--record", str(rec), "--no-fwcfg")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (root / "usr/home/core/.ssh/authorized_keys").exists()
    assert json.loads((root / "var/db/fpvm/state.json").read_text())["provisioned"]


def test_agent_entry_point_without_the_other_areas(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "fpvm.guest", "provision", "--root", str(root), "--config",
         str(PODMAN_CAPTURE / "machine.ign"), "--record", str(tmp_path / "r"), "--no-ready"],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "fpvm: provisioned" in res.stdout


def test_missing_config_file_is_exit_1(tmp_path: Path) -> None:
    res = run_fpvm("guest", "provision", "--root", str(tmp_path), "--config", str(tmp_path / "nope.ign"))
    assert res.returncode == 1 and "cannot read" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_root_is_exit_1(tmp_path: Path) -> None:
    res = run_fpvm(
        "guest",
        "provision",
        "--root",
        str(tmp_path / "none"),
        "--config",
        str(PODMAN_CAPTURE / "machine.ign"),
    )
    assert res.returncode == 1 and "not a directory" in res.stderr
    assert not (tmp_path / "none").exists()


def test_failed_run_is_not_marked_provisioned(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "etc/containers").symlink_to("/")  # the marker cannot be written: one action fails
    res = run_fpvm("guest", "provision", "--root", str(root), "--config", str(PODMAN_CAPTURE / "machine.ign"),
                   "--record", str(tmp_path / "r"), "--no-ready")  # fmt: skip
    assert res.returncode == 2
    state = json.loads((root / "var/db/fpvm/state.json").read_text())
    assert "provisioned" not in state and len(state["config_sha256"]) == 64
