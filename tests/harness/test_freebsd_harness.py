"""The FreeBSD checks' own machinery, exercised here against a real loopback sshd (a Linux target).

tests/freebsd answers its questions only on FreeBSD; what can be proven here is that the transport
carries commands, input, output and exit status faithfully, that an unreachable target is an error and not
a verdict, and that a non-FreeBSD target makes every check skip with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "freebsd"))

from freebsd_target import Target, TargetError, from_environment, ssh_prefix, unavailable  # noqa: E402
from harness_sshd import LoopbackSshd, loopback_sshd  # noqa: E402


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    with loopback_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def target(sshd: LoopbackSshd) -> Target:
    found = from_environment({"FPVM_TARGET": sshd.url, "FPVM_TARGET_KEY": str(sshd.key)})
    assert found is not None
    return found


@pytest.mark.slow
def test_commands_output_input_and_status_cross_ssh(target: Target, tmp_path: Path) -> None:
    assert target.check("echo one; echo two >&2").strip() == "one"
    res = target.run("exit 7")
    assert res.status == 7
    payload = bytes(range(256)) * 4
    assert target.run("cat", input=payload).stdout == payload
    probe = tmp_path / "probe file"
    probe.write_bytes(b"\x00data\n")
    assert target.read(str(probe)) == b"\x00data\n"
    assert target.exists(str(probe)) and not target.exists(str(tmp_path / "absent"))
    with pytest.raises(AssertionError, match="exited 3"):
        target.check("echo why >&2; exit 3")


@pytest.mark.slow
def test_a_linux_target_is_reported_not_judged(target: Target) -> None:
    why = unavailable(target)
    assert why is not None and "runs Linux, not FreeBSD" in why


def test_unreachable_target_is_an_error() -> None:
    dead = Target("dead", ssh_prefix("ssh://root@127.0.0.1:1", None))
    with pytest.raises(TargetError, match="ssh failed"):
        dead.run("true")
    assert "cannot reach" in (unavailable(dead) or "")


def test_target_urls() -> None:
    argv = ssh_prefix("ssh://core@[::1]:2222", "/k")
    assert argv[-2:] == ["core@::1", "--"] and argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-i") + 1] == "/k"
    with pytest.raises(TargetError, match="ssh://"):
        ssh_prefix("root@host", None)
    assert from_environment({}) is None  # this is not FreeBSD


@pytest.mark.slow
def test_the_freebsd_suite_skips_every_check_against_a_linux_target(sshd: LoopbackSshd) -> None:
    env = {**os.environ, "FPVM_TARGET": sshd.url, "FPVM_TARGET_KEY": str(sshd.key)}
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/freebsd"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    summary = res.stdout.strip().split("\n")[-1]
    assert "skipped" in summary and "passed" not in summary and "failed" not in summary, summary
    assert "runs Linux, not FreeBSD" in res.stdout
