"""The contract test's stand-in for the guest's shell + sudo parses podman's lines, never runs them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "standins"))
from forced_command import split_commands


def test_podmans_lines_split_like_sh_would() -> None:
    assert split_commands("sudo chattr -i / ; sudo mkdir -p /tmp ; sudo chattr +i / ;") == [
        ["sudo", "chattr", "-i", "/"],
        ["sudo", "mkdir", "-p", "/tmp"],
        ["sudo", "chattr", "+i", "/"],
    ]
    assert split_commands('sudo mount -t virtiofs t "/a/b" -o context="system_u:object_r:nfs_t:s0"') == [
        ["sudo", "mount", "-t", "virtiofs", "t", "/a/b", "-o", "context=system_u:object_r:nfs_t:s0"]
    ]


@pytest.mark.parametrize("line", ["true && rm -rf /", "a | b", "a > /etc/passwd", "sleep 1 &", "a || b"])
def test_other_shell_operators_are_refused(line: str) -> None:
    with pytest.raises(ValueError, match="is not emulated"):
        split_commands(line)
