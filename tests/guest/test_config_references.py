"""``ignition.config.merge``/``replace`` are followed before provisioning, as upstream Ignition does."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

from fpvm_runner import run_fpvm


def _data_url(doc: dict[str, object]) -> tuple[str, bytes]:
    raw = json.dumps(doc).encode()
    return "data:;base64," + base64.b64encode(raw).decode(), raw


def _child() -> dict[str, object]:
    return {
        "ignition": {"version": "3.0.0"},
        "storage": {"files": [{"path": "/etc/from-child", "contents": {"source": "data:,merged%0A"}}]},
    }


def _provision(tmp_path: Path, parent: dict[str, object]) -> subprocess.CompletedProcess[str]:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    cfg = tmp_path / "parent.ign"
    cfg.write_text(json.dumps(parent))
    return run_fpvm("guest", "provision", "--root", str(root), "--config", str(cfg),
                    "--record", str(tmp_path / "cmds.jsonl"), "--no-ready")  # fmt: skip


def test_merged_child_files_are_provisioned(tmp_path: Path) -> None:
    url, raw = _data_url(_child())
    parent = {
        "ignition": {
            "version": "3.2.0",
            "config": {
                "merge": [
                    {"source": url, "verification": {"hash": "sha512-" + hashlib.sha512(raw).hexdigest()}}
                ]
            },
        },
        "storage": {"files": [{"path": "/etc/from-parent", "contents": {"source": "data:,parent%0A"}}]},
    }
    result = _provision(tmp_path, parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "root/etc/from-child").read_bytes() == b"merged\n"
    assert (tmp_path / "root/etc/from-parent").read_bytes() == b"parent\n"


def test_replace_wins_over_the_parent(tmp_path: Path) -> None:
    url, _ = _data_url(_child())
    parent = {
        "ignition": {"version": "3.2.0", "config": {"replace": {"source": url}}},
        "storage": {"files": [{"path": "/etc/from-parent", "contents": {"source": "data:,parent%0A"}}]},
    }
    result = _provision(tmp_path, parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "root/etc/from-child").read_bytes() == b"merged\n"
    assert not (tmp_path / "root/etc/from-parent").exists()


def test_unverifiable_reference_applies_nothing(tmp_path: Path) -> None:
    url, _ = _data_url(_child())
    parent = {
        "ignition": {
            "version": "3.2.0",
            "config": {"merge": [{"source": url, "verification": {"hash": "sha512-" + "0" * 128}}]},
        },
        "storage": {"files": [{"path": "/etc/from-parent", "contents": {"source": "data:,parent%0A"}}]},
    }
    result = _provision(tmp_path, parent)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "hash" in (result.stdout + result.stderr).lower()
    assert not (tmp_path / "root/etc/from-parent").exists()
    assert not (tmp_path / "root/etc/from-child").exists()


def test_sections_the_guest_cannot_apply_are_reported_not_dropped(tmp_path: Path) -> None:
    config = {
        "ignition": {"version": "3.3.0"},
        "storage": {
            "disks": [{"device": "/dev/vdb", "partitions": [{"label": "data", "number": 1}]}],
            "raid": [{"name": "md0", "level": "raid1", "devices": ["/dev/vdc", "/dev/vdd"]}],
            "filesystems": [{"device": "/dev/disk/by-partlabel/data", "format": "ext4", "path": "/var/data"}],
            "luks": [{"name": "secret", "device": "/dev/vde"}],
        },
        "kernelArguments": {"shouldExist": ["foo=bar"], "shouldNotExist": ["quiet"]},
    }
    cfg = tmp_path / "devices.ign"
    cfg.write_text(json.dumps(config))
    plan = run_fpvm("guest", "plan", "--json", "--config", str(cfg), check=True)
    sources = {a["source"]: a["disposition"] for a in json.loads(plan.stdout)}
    assert sources == {
        "$.storage.disks[0]": "ignore",
        "$.storage.raid[0]": "ignore",
        "$.storage.filesystems[0]": "ignore",
        "$.storage.luks[0]": "ignore",
        "$.kernelArguments.shouldExist": "ignore",
        "$.kernelArguments.shouldNotExist": "ignore",
    }
    show = run_fpvm("ignition", "show", "--json", str(cfg), check=True)
    info = json.loads(show.stdout)
    assert [d["path"] for d in info["devices"]] == [
        "disks: /dev/vdb",
        "raid: md0",
        "filesystems: /dev/disk/by-partlabel/data",
        "luks: secret",
    ]
    assert [k["path"] for k in info["kernel arguments"]] == ["shouldExist: foo=bar", "shouldNotExist: quiet"]
    assert all(
        d["disposition"] == "ignore" and d["notes"] for d in info["devices"] + info["kernel arguments"]
    )
    result = _provision(tmp_path, config)
    assert result.returncode == 0, result.stdout + result.stderr
