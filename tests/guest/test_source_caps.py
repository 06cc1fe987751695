"""Config sources are outside input: every read is bounded in size and never blocks (issue 16).

The --config file, the qemufwcfg mount files (config and environment entry) and the Hyper-V KVP pool
file are read through ``fpvm.fsutil``: a FIFO, device or symlink in their place, or a file over the
64 MiB Ignition resource cap, is that source's one-line problem and the boot goes on (an explicit
--config is the caller's own request, so it stays an error). The oversized cases run in a child
process under RLIMIT_AS, so reading the whole file would fail the test instead of passing slowly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fpvm.fsutil import SpecialFileError
from fpvm.guest import apisocket, kvp
from fpvm.guest.configsource import MAX_CONFIG_BYTES, Probe, find_sources
from fpvm.guest.context import Log, make_context
from fpvm.guest.rootfs import RootFS
from fpvm.ignition.budget import MAX_RESOURCE_BYTES
from fpvm_support import REPO, deadline

CFG = "opt/com.coreos/config"
ENV = "opt/com.coreos/environment"
AS_LIMIT = 512 * 1024 * 1024


def run_limited(*argv: str) -> subprocess.CompletedProcess[str]:
    """``fpvm ARGV`` in a child whose address space is capped at 512 MiB."""
    code = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({AS_LIMIT}, {AS_LIMIT}))
        from fpvm.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    argv = (sys.executable, "-c", code, *argv)
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False, timeout=120)


def big_file(path: Path, size: int) -> Path:
    """A sparse file of ``size`` bytes (costs no disk; reading it all would cost the memory)."""
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def mount_with(tmp_path: Path) -> Path:
    mount = tmp_path / "qemufwcfg"
    (mount / "opt/com.coreos").mkdir(parents=True)
    return mount


def test_cap_is_the_ignition_resource_cap() -> None:
    assert MAX_CONFIG_BYTES == MAX_RESOURCE_BYTES == 64 * 1024 * 1024
    assert kvp.MAX_CONFIG_BYTES == MAX_RESOURCE_BYTES


# -- --config ------------------------------------------------------------------------------------------
def test_65_mib_config_file_is_a_one_line_error_in_bounded_memory(tmp_path: Path) -> None:
    config = big_file(tmp_path / "huge.ign", 65 * 1024 * 1024)
    root = tmp_path / "root"
    root.mkdir()
    res = run_limited(
        "guest", "boot", "--root", str(root), "--config", str(config), "--record", str(tmp_path / "rec"),
        "--no-fwcfg", "--qemufwcfg-mount", "",
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines == [
        f"fpvm guest: error: {config}: {65 * 1024 * 1024} bytes, over the {MAX_RESOURCE_BYTES}-byte limit"
    ], res.stderr
    res = run_limited("guest", "provision", "--root", str(root), "--config", str(config), "--no-ready")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"fpvm: cannot read {config}: {config}: {65 * 1024 * 1024} bytes, "
        f"over the {MAX_RESOURCE_BYTES}-byte limit"
    ]


def test_config_file_at_the_cap_is_read(tmp_path: Path) -> None:
    config = big_file(tmp_path / "max.ign", MAX_CONFIG_BYTES)
    out = find_sources(config_file=str(config), fwcfg_opener=None, qemufwcfg_mount=None)
    assert out.config is not None and len(out.config) == MAX_CONFIG_BYTES


def test_fifo_as_config_file_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "config.ign"
    os.mkfifo(fifo)
    with deadline(10), pytest.raises(SpecialFileError, match="not a regular file \\(a FIFO\\)"):
        find_sources(config_file=str(fifo), fwcfg_opener=None, qemufwcfg_mount=None)


def test_symlinked_config_file_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real.ign").write_bytes(b"{}")
    (tmp_path / "link.ign").symlink_to("real.ign")
    out = find_sources(config_file=str(tmp_path / "link.ign"), fwcfg_opener=None, qemufwcfg_mount=None)
    assert out.config == b"{}"


# -- the qemufwcfg mount -------------------------------------------------------------------------------
def test_fifo_config_in_mount_is_reported_and_environment_still_read(tmp_path: Path) -> None:
    mount = mount_with(tmp_path)
    os.mkfifo(mount / CFG)
    (mount / ENV).write_bytes(b"aHR0cF9wcm94eT0iaCI=")
    log = Log()
    with deadline(10):
        out = find_sources(fwcfg_opener=None, qemufwcfg_mount=str(mount), probe=Probe(), log=log)
    assert out.config is None
    assert out.environment == b"aHR0cF9wcm94eT0iaCI="
    errors = [a for a in out.attempts if a.status == "error"]
    assert [a.source for a in errors] == [f"qemufwcfg {mount / CFG}"]
    assert "not a regular file (a FIFO)" in errors[0].detail
    fifo_lines = [line for line in log.lines if "FIFO" in line]
    assert len(fifo_lines) == 1 and "\n" not in fifo_lines[0]


def test_fifo_environment_in_mount_does_not_hang(tmp_path: Path) -> None:
    mount = mount_with(tmp_path)
    (mount / CFG).write_bytes(b"{}")
    os.mkfifo(mount / ENV)
    with deadline(10):
        out = find_sources(fwcfg_opener=None, qemufwcfg_mount=str(mount), probe=Probe())
    assert out.config == b"{}" and out.environment is None
    assert [a.status for a in out.attempts if a.source.endswith(ENV)] == ["error"]


def test_symlink_in_mount_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere.ign"
    secret.write_bytes(b'{"not":"for you"}')
    mount = mount_with(tmp_path)
    (mount / CFG).symlink_to(secret)
    out = find_sources(fwcfg_opener=None, qemufwcfg_mount=str(mount), probe=Probe())
    assert out.config is None
    assert [a.status for a in out.attempts if a.source.endswith(CFG)] == ["error"]


def test_oversized_mount_file_is_reported_and_boot_goes_on(tmp_path: Path) -> None:
    mount = mount_with(tmp_path)
    big_file(mount / CFG, MAX_CONFIG_BYTES + 1)
    root = tmp_path / "root"
    root.mkdir()
    code = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, ({AS_LIMIT}, {AS_LIMIT}))
        from fpvm.guest.configsource import Probe, find_sources
        out = find_sources(fwcfg_opener=None, qemufwcfg_mount={str(mount)!r}, probe=Probe())
        print(out.config is None)
        print([a.line() for a in out.attempts if a.status == "error"])
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False, timeout=120
    )
    assert res.returncode == 0, res.stderr
    none, errors = res.stdout.splitlines()
    assert none == "True"
    assert f"{MAX_CONFIG_BYTES + 1} bytes, over the {MAX_CONFIG_BYTES}-byte limit" in errors


# -- the Hyper-V KVP pool --------------------------------------------------------------------------------
def hyperv_probe(root: Path) -> Probe:
    return Probe(
        RootFS(root), lambda argv: "hv" if list(argv) == ["/sbin/sysctl", "-n", "kern.vm_guest"] else None
    )


def pool_path(root: Path) -> Path:
    path = root / kvp.pool_file().lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_huge_kvp_pool_is_capped_by_record_count(tmp_path: Path) -> None:
    size = (kvp.MAX_RECORDS + 1) * kvp.RECORD_SIZE
    big_file(pool_path(tmp_path), size)
    with pytest.raises(kvp.KvpError, match=f"{size} bytes, more than {kvp.MAX_RECORDS} records"):
        kvp.read_ignition(str(tmp_path))
    log = Log()
    out = find_sources(fwcfg_opener=None, qemufwcfg_mount=None, probe=hyperv_probe(tmp_path), log=log)
    assert out.config is None
    assert [a.status for a in out.attempts if a.source.startswith("hyperv KVP /")] == ["error"]
    assert f"more than {kvp.MAX_RECORDS} records" in out.unsupported[0].detail


def test_kvp_record_cap_holds_the_largest_podman_config() -> None:
    pieces = -(-MAX_RESOURCE_BYTES // kvp.PODMAN_PIECE) + 1  # ginsu.Dice adds an empty last piece
    assert pieces < kvp.MAX_RECORDS


def test_kvp_pool_is_streamed_with_a_record_cap(tmp_path: Path) -> None:
    from test_kvp import record

    path = pool_path(tmp_path)
    path.write_bytes(b"".join(record(b"ignition.config.%d" % i, b"x") for i in range(4)))
    assert len(kvp.read_pool(str(path), max_records=4)) == 4
    with pytest.raises(kvp.KvpError, match="more than 3 records"):
        kvp.read_pool(str(path), max_records=3)
    other = record(b"VirtualMachineName", b"vm")
    path.write_bytes(other + record(b"ignition.config.0", b"{}"))
    assert kvp.read_pool(str(path)) == [(b"ignition.config.0", b"{}")]


def test_kvp_ignition_values_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_kvp import record

    path = pool_path(tmp_path)
    path.write_bytes(record(b"ignition.config.0", b"x" * 6) + record(b"ignition.config.1", b"y" * 5))
    monkeypatch.setattr(kvp, "MAX_CONFIG_BYTES", 11)
    assert kvp.read_ignition(str(tmp_path)) == (b"x" * 6 + b"y" * 5, 2)
    monkeypatch.setattr(kvp, "MAX_CONFIG_BYTES", 10)
    with pytest.raises(kvp.KvpError, match="values exceed the 10-byte config limit"):
        kvp.read_ignition(str(tmp_path))


def test_kvp_pool_fifo_or_symlink_is_an_error_not_a_hang(tmp_path: Path) -> None:
    path = pool_path(tmp_path)
    os.mkfifo(path)
    with deadline(10):
        out = find_sources(fwcfg_opener=None, qemufwcfg_mount=None, probe=hyperv_probe(tmp_path))
    kvp_attempts = [a for a in out.attempts if a.source.startswith("hyperv KVP /")]
    assert [a.status for a in kvp_attempts] == ["error"]
    assert "a FIFO" in kvp_attempts[0].detail
    path.unlink()
    real = tmp_path / "pool"
    real.write_bytes(b"")
    path.symlink_to(real)
    with pytest.raises(OSError):
        kvp.read_ignition(str(tmp_path))


# -- ApiGroupAction goes through the account database ---------------------------------------------------
def test_api_group_membership_is_indexed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/master.passwd").write_text("core:*:1001:1001::0:0:Core:/home/core:/bin/sh\n")
    (root / "etc/passwd").write_text("core:*:1001:1001:Core:/home/core:/bin/sh\n")
    (root / "etc/group").write_text("wheel:*:0:root\ncore:*:1001:\npodman:*:1010:\n")
    ctx = make_context(str(root), record=str(tmp_path / "rec"))
    assert apisocket.ApiGroupAction("core", group="podman").apply(ctx)
    assert ctx.accounts.supplementary("core") == ["podman"]
    assert "podman:*:1010:core\n" in (root / "etc/group").read_text()
    assert not apisocket.ApiGroupAction("core", group="podman").apply(ctx)  # second run: nothing
