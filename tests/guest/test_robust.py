"""Hostile input to the agent: crash safety, terminal injection, special files, append, scale of notes.

Each test stands for a defect found by an adversarial run (issue 16): it failed before the fix.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from guest_support import REPO, make_root, minimal, write_config

from fpvm.guest.plan import PlanOptions, build_plan
from fpvm.guest.provision import provision
from fpvm.ignition import parse
from fpvm_runner import run_fpvm
from fpvm_support import deadline


def data_url(data: bytes) -> str:
    return "data:," + urllib.parse.quote(data)


def run(root: Path, cfg: dict[str, Any]) -> tuple[Any, str]:
    """provision() in-process on a staged root (commands recorded): (outcome, summary)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        out = provision(str(root), json.dumps(cfg).encode(), record=str(root.parent / "rec.jsonl"))
    return out, out.summary(str(root), None) + err.getvalue()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path)


def temps(root: Path) -> list[str]:
    return sorted(
        os.path.join(d, n)
        for d, dirs, files in os.walk(root)
        for n in dirs + files
        if n.endswith(".fpvm-tmp")
    )


# -- crash safety ---------------------------------------------------------------------------------------
def test_sigkill_mid_provision_leaves_no_temp_files_after_the_next_run(root: Path, tmp_path: Path) -> None:
    """Really kill a provisioning process while a temporary file exists; the next run removes them."""
    size = 32 * 1024 * 1024
    blob = base64.b64encode(gzip.compress(b"\0" * size, 1)).decode()
    files = [
        {"path": f"/srv/big/f{i}", "contents": {"source": f"data:;base64,{blob}", "compression": "gzip"}}
        for i in range(4)
    ]
    config = write_config(tmp_path / "big.ign", minimal(storage={"files": files}))
    argv = [sys.executable, "-m", "fpvm", "guest", "provision", "--root", str(root), "--config", str(config)]
    argv += ["--record", str(tmp_path / "rec.jsonl"), "--no-ready"]
    big = root / "srv/big"
    kills = 0
    for _attempt in range(20):
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        caught = False
        while proc.poll() is None:
            names = os.listdir(big) if big.is_dir() else []
            if any(n.endswith(".fpvm-tmp") and n.startswith(".f") for n in names):
                proc.send_signal(signal.SIGSTOP)
                if temps(big):  # still there while stopped: the kill lands mid-write
                    proc.kill()
                    caught = True
                    break
                proc.send_signal(signal.SIGCONT)
        proc.wait()
        if caught:
            kills += 1
            if kills == 3:
                break
    assert kills == 3, "could not kill the provision while a temporary file existed"
    assert temps(root), "the killed runs left their temporary files (precondition)"
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert temps(root) == []
    for i in range(4):
        data = (big / f"f{i}").read_bytes()
        assert len(data) == size and data.count(0) == size
    state = json.loads((root / "var/db/fpvm/state.json").read_text())
    assert state.get("provisioned")


def test_only_own_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    from fpvm.fsutil import clean_stale_temps, is_own_temp

    d = tmp_path / "d"
    d.mkdir()
    own = [".passwd.0123456789ab.fpvm-tmp", ".localtime.fpvm-tmp"]
    foreign = ["passwd.fpvm-tmp", ".x.fpvm-tmpx", ".fpvm-tmp", "..fpvm-tmp", "keep"]
    for n in own + foreign:
        (d / n).write_text("x")
    (d / ".dir.fpvm-tmp").mkdir()  # a directory is never ours
    os.symlink("/nonexistent", d / ".link.fpvm-tmp")  # symlink() leaves these
    young = d / ".young.0123456789ab.fpvm-tmp"  # a concurrent writer's: not older than this run
    young.write_text("x")
    start = time.time() - 0.5
    past = start - 100
    for n in [*own, *foreign, ".dir.fpvm-tmp"]:
        os.utime(d / n, (past, past))
    os.utime(d / ".link.fpvm-tmp", (past, past), follow_symlinks=False)
    os.utime(young, (start + 10, start + 10))
    assert clean_stale_temps(d, start) == 3
    assert sorted(os.listdir(d)) == sorted([*foreign, ".dir.fpvm-tmp", young.name])
    assert is_own_temp(".a.fpvm-tmp") and not is_own_temp("a.fpvm-tmp") and not is_own_temp(".fpvm-tmp")


# -- terminal injection -----------------------------------------------------------------------------------
EVIL = "/etc/evil\x1b[2J\nFORGED: line\u2028x\x85y"


def test_provision_summary_log_and_plan_print_config_strings_escaped(root: Path, tmp_path: Path) -> None:
    cfg = minimal(storage={"files": [{"path": EVIL, "contents": {"source": data_url(b"x")}}]})
    config = write_config(tmp_path / "evil.ign", cfg)
    result = run_fpvm(
        "guest", "provision", "--root", str(root), "--config", str(config),
        "--record", str(tmp_path / "rec.jsonl"), "--no-ready",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (root / EVIL[1:]).read_bytes() == b"x"  # written under its real name
    plan = run_fpvm("guest", "plan", "--config", str(config), "--root", str(root))
    assert plan.returncode == 0
    log = (root / "var/log/fpvm.log").read_text()
    for text in (result.stdout + result.stderr, plan.stdout, log):
        assert "\x1b" not in text and "\x85" not in text and "\u2028" not in text
        assert not any(line.startswith("FORGED") for line in text.split("\n"))
    assert "evil\\e[2J\\nFORGED: line\\u2028x\\x85y" in result.stdout
    assert "evil\\e[2J\\nFORGED" in plan.stdout


def test_boot_echo_is_escaped(root: Path, tmp_path: Path) -> None:
    """The boot step echoes its log lines to the console (rc runs it at boot)."""
    from fpvm.guest.rcd import boot

    cfg = minimal(storage={"files": [{"path": EVIL, "contents": {"source": data_url(b"x")}}]})
    config = write_config(tmp_path / "evil.ign", cfg)
    (root / EVIL[1:]).write_bytes(b"the admin's")  # overwrite false: a warning names the path
    console = io.StringIO()
    status = boot(
        str(root), config_file=str(config), record=str(tmp_path / "rec.jsonl"),
        qemufwcfg_mount=None, echo=console,
    )  # fmt: skip
    assert status == 0
    assert "evil\\e[2J\\nFORGED" in console.getvalue()
    assert "\x1b" not in console.getvalue() and "\nFORGED" not in console.getvalue()


def test_printable_is_the_identity_on_printable_text() -> None:
    from fpvm.safetext import printable

    assert printable("/home/core/.ssh/authorized_keys é ✓") == "/home/core/.ssh/authorized_keys é ✓"
    assert printable("a\tb\x00c\x7fd\u200be") == "a\\tb\\x00c\\x7fd\\u200be"
    assert printable("x" * 50, 10) == "x" * 10 + "…(40 more)"


# -- special files ----------------------------------------------------------------------------------------
def test_localtime_to_a_device_is_not_read(root: Path) -> None:
    (root / "dev").mkdir()
    os.mkfifo(root / "dev/zero")  # reading blocks forever, as /dev/zero never ends
    cfg = minimal(storage={"links": [{"path": "/etc/localtime", "target": "/dev/zero"}]})
    with deadline(30):
        out, text = run(root, cfg)
    assert out.status == 0
    assert "time zone file /dev/zero is not in the root" in text


def test_log_fifo_does_not_hang_provisioning(root: Path) -> None:
    os.mkfifo(root / "var/log/fpvm.log")
    cfg = minimal(storage={"files": [{"path": "/etc/motd", "contents": {"source": data_url(b"hi\n")}}]})
    with deadline(30):
        _out, text = run(root, cfg)
    assert (root / "etc/motd").read_bytes() == b"hi\n"
    assert "cannot write the log" in text  # ENXIO: a FIFO without a reader is not opened


def test_hard_link_in_a_staged_root_does_not_carry_a_mode_change_outside(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside-secret"
    outside.write_bytes(b"x")
    os.chmod(outside, 0o644)
    os.link(outside, root / "etc/planted")
    cfg = minimal(
        storage={"files": [{"path": "/etc/planted", "mode": 0o4777, "contents": {"source": data_url(b"x")}}]}
    )
    out, text = run(root, cfg)
    assert oct(outside.stat().st_mode & 0o7777) == oct(0o644)
    assert out.status == 2 and "hard links" in text


def test_hard_linked_log_in_a_staged_root_is_neither_written_nor_chmodded(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside-log"
    outside.write_bytes(b"")
    os.chmod(outside, 0o666)
    os.link(outside, root / "var/log/fpvm.log")
    cfg = minimal(storage={"files": [{"path": "/etc/motd", "contents": {"source": data_url(b"hi\n")}}]})
    out, text = run(root, cfg)
    assert out.status == 0 and "cannot write the log" in text and "hard links" in text
    assert outside.read_bytes() == b"" and oct(outside.stat().st_mode & 0o777) == oct(0o666)


def test_a_file_with_other_bytes_is_replaced_not_changed_through_its_link(root: Path, tmp_path: Path) -> None:
    """Different contents mean a new inode (rename): the outside name keeps its bytes and mode."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"old")
    os.link(outside, root / "etc/planted")
    cfg = minimal(
        storage={
            "files": [
                {
                    "path": "/etc/planted",
                    "overwrite": True,
                    "mode": 0o600,
                    "contents": {"source": data_url(b"n")},
                }
            ]
        }
    )
    out, _ = run(root, cfg)
    assert out.status == 0
    assert outside.read_bytes() == b"old" and oct(outside.stat().st_mode & 0o777) == oct(0o644)
    assert (root / "etc/planted").read_bytes() == b"n"


def test_read_regular_refuses_fifos_devices_and_oversize(tmp_path: Path) -> None:
    from fpvm.fsutil import SpecialFileError, read_regular

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with deadline(20), pytest.raises(SpecialFileError, match="FIFO"):
        read_regular(fifo)
    big = tmp_path / "big"
    big.write_bytes(b"a" * 100)
    with pytest.raises(SpecialFileError, match="limit"):
        read_regular(big, 99)
    assert read_regular(big, 100) == b"a" * 100
    os.symlink(big, tmp_path / "link")
    with pytest.raises(OSError):
        read_regular(tmp_path / "link")
    assert read_regular(tmp_path / "link", follow=True) == b"a" * 100


# -- append ------------------------------------------------------------------------------------------------
def _append_cfg(fragment: bytes, **extra: Any) -> dict[str, Any]:
    entry = {"path": "/etc/app.conf", "append": [{"source": data_url(fragment)}], **extra}
    return minimal(storage={"files": [entry]})


def test_append_is_decided_by_the_record_not_by_substring(root: Path) -> None:
    conf = root / "etc/app.conf"
    conf.write_bytes(b"pre-existing\n")
    out, _ = run(root, _append_cfg(b"exist"))
    assert out.status == 0 and conf.read_bytes() == b"pre-existing\nexist"  # a substring is no record
    out, _ = run(root, _append_cfg(b"exist"))
    assert out.changed == [] and conf.read_bytes() == b"pre-existing\nexist"  # recorded: not again
    out, _ = run(root, _append_cfg(b"exist2\n"))  # a changed fragment is a new one: appended
    assert conf.read_bytes() == b"pre-existing\nexistexist2\n"
    out, _ = run(root, _append_cfg(b"exist2\n"))
    assert out.changed == [] and conf.read_bytes() == b"pre-existing\nexistexist2\n"
    state = json.loads((root / "var/db/fpvm/state.json").read_text())
    assert len(state["appended"]["/etc/app.conf"]) == 2


def test_append_to_a_file_written_afresh_gets_every_fragment(root: Path) -> None:
    conf = root / "etc/app.conf"
    cfg = _append_cfg(b"+frag", overwrite=True, contents={"source": data_url(b"base")})
    run(root, cfg)
    assert conf.read_bytes() == b"base+frag"
    out, _ = run(root, cfg)
    assert out.changed == [] and conf.read_bytes() == b"base+frag"
    conf.write_bytes(b"admin edit")  # overwrite: true puts contents + fragments back
    run(root, cfg)
    assert conf.read_bytes() == b"base+frag"
    conf.unlink()  # gone: written afresh
    run(root, _append_cfg(b"+frag"))
    assert conf.read_bytes() == b"+frag"


# -- scale: kernel arguments -------------------------------------------------------------------------------
def test_ignored_kernel_arguments_cost_one_action_per_list_not_per_argument(root: Path) -> None:
    args = [f"arg{i}=x" for i in range(5000)]
    cfg = {
        "ignition": {"version": "3.3.0"},
        "kernelArguments": {"shouldExist": args, "shouldNotExist": ["quiet"]},
    }
    actions = build_plan(parse(json.dumps(cfg).encode()), PlanOptions())
    kargs = [a for a in actions if a.source.startswith("$.kernelArguments")]
    assert [a.source for a in kargs] == ["$.kernelArguments.shouldExist", "$.kernelArguments.shouldNotExist"]
    assert "5000 kernel argument(s)" in kargs[0].describe() and "arg0=x" in kargs[0].describe()
    out, _ = run(root, cfg)
    report = json.loads((root / "var/db/fpvm/last-boot.json").read_text())
    assert out.total == len(report["actions"]) == len(actions) <= 3
