"""Host folders over virtio-9p: kldload(8), sysctl(8), mount(8) with p9fs(4), and fpvm's mount table."""

from __future__ import annotations

import json

import pytest
from freebsd_target import Target

from fpvm.guest.mounts import parse_mounted, parse_p9_tags


def _table(target: Target) -> list[dict[str, object]]:
    if not target.exists("/usr/local/etc/fpvm/mounts.json"):
        return []
    mounts: list[dict[str, object]] = json.loads(target.read("/usr/local/etc/fpvm/mounts.json"))["mounts"]
    return mounts


def test_kldload_n_is_idempotent(target: Target) -> None:
    target.check("kldload -n virtio_p9fs")
    target.check("kldload -n virtio_p9fs")
    assert "p9fs" in target.check("kldstat -v")


def test_sysctl_lists_each_9p_tag_as_the_shim_parses_it(target: Target) -> None:
    res = target.run("sysctl -e dev.virtio_p9fs")
    tags = parse_p9_tags(res.stdout)
    for entry in _table(target):
        assert entry["tag"] in tags, f"no 9p device offers {entry['tag']}: {res.text}"


def test_every_table_entry_is_mounted_with_its_mode(target: Target) -> None:
    mounted = parse_mounted(target.check("mount -p"))
    for entry in _table(target):
        assert (entry["tag"], entry["target"]) in mounted
        probe = f"{entry['target']}/.fpvm-write-probe"
        res = target.run(f"touch '{probe}' && rm -f '{probe}'")
        if entry.get("readonly"):
            assert res.status != 0 and "Read-only file system" in res.stderr.decode(errors="replace")
        else:
            assert res.status == 0, res.stderr


def test_podman_4_mount_line_goes_through_the_shim(target: Target, machine_user: str) -> None:
    """podman 4.x's exact line, as the machine user through sudo, on a tag that is already mounted: the
    shim recognises the existing mount and exits 0 without mounting twice."""
    table = _table(target)
    if not table:
        pytest.skip("this machine was started without shared folders")
    entry = table[0]
    line = (
        f"sudo -n mount -t 9p -o trans=virtio {entry['tag']} {entry['target']} "
        "-o version=9p2000.L,msize=131072"
    )
    res = target.run(f"su -m {machine_user} -c '{line}' </dev/null")
    assert res.status == 0, res.stderr
    mounted = [m for m in parse_mounted(target.check("mount -p")) if m[1] == entry["target"]]
    assert len(mounted) == 1
