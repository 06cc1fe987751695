"""The ZFS image (`fpvm build --fs zfs`, the default): the pool, its boot environment, the containers
dataset podman's zfs driver uses, the ARC cap and the pool's growth into a resized disk.

Skipped with the reason when the root is not ZFS (an image built with `--fs ufs`). The layout is
FreeBSD's own ZFS VM image (release/tools/vmimage.subr, buildfs with VMFS=zfs) made by makefs(8)
`-t zfs`; growth is rc.d/growfs's ZFS branch (`zpool online -e`), run at every boot by rc.d/fpvm_growfs.

Commands: zpool-list(8), zpool get (zpool-set.8), zfs get (zfs-set.8), gpart(8) show, diskinfo(8),
mount(8) -p, kenv(1), sysctl(8), podman-info(1). The argv constants below are held against those
pages' synopses by tests/image/test_image_zfs.py.
"""

from __future__ import annotations

import shlex

import pytest
from freebsd_target import Target

POOL = "zroot"
BOOTFS = "zroot/ROOT/default"
CONTAINERS = "zroot/containers"
CONTAINERS_MOUNT = "/var/db/containers"

POOL_HEALTH_ARGV = ("zpool", "list", "-H", "-o", "name,health", POOL)
POOL_SIZE_ARGV = ("zpool", "list", "-Hp", "-o", "size,expandsize", POOL)
POOL_VDEV_ARGV = ("zpool", "list", "-HvP", "-o", "name", POOL)
BOOTFS_ARGV = ("zpool", "get", "-H", "-o", "value", "bootfs", POOL)
CONTAINERS_ARGV = ("zfs", "get", "-H", "-o", "property,value", "mountpoint,mounted", CONTAINERS)
GPART_SHOW_ARGV = ("gpart", "show", "-p")


def _run(target: Target, argv: tuple[str, ...]) -> str:
    return target.check(shlex.join(argv))


@pytest.fixture(scope="module")
def zfs_root(target: Target) -> str:
    """The dataset mounted on / (mount -p); skips the module when the root is not ZFS."""
    for line in target.check("mount -p").split("\n"):
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "/":
            if fields[2] != "zfs":
                pytest.skip(f"the root file system is {fields[2]}, not zfs (an image built with --fs ufs)")
            return fields[0]
    pytest.fail("mount -p lists no root file system")


def test_pool_is_imported_and_healthy(target: Target, zfs_root: str) -> None:
    assert _run(target, POOL_HEALTH_ARGV).split() == [POOL, "ONLINE"]
    assert zfs_root.split("/")[0] == POOL


def test_bootfs_is_the_default_boot_environment(target: Target, zfs_root: str) -> None:
    """makefs -o bootfs=zroot/ROOT/default; the loader mounted it as / (no vfs.root.mountfrom set)."""
    assert _run(target, BOOTFS_ARGV).strip() == BOOTFS
    assert zfs_root == BOOTFS
    assert target.check("kenv -q zfs_load").strip() == "YES"  # loader.conf.d/fpvm-zfs.conf


def test_containers_dataset_is_mounted_at_var_db_containers(target: Target, zfs_root: str) -> None:
    values = dict(line.split("\t") for line in _run(target, CONTAINERS_ARGV).strip().split("\n"))
    assert values == {"mountpoint": CONTAINERS_MOUNT, "mounted": "yes"}
    mounts = [line.split()[:3] for line in target.check("mount -p").split("\n") if line.strip()]
    assert [CONTAINERS, CONTAINERS_MOUNT, "zfs"] in mounts


def test_podman_uses_the_zfs_driver_on_the_containers_dataset(target: Target, zfs_root: str) -> None:
    """storage.conf driver "zfs" with fsname zroot/containers: layers are datasets below it."""
    driver = target.check("podman info --format '{{.Store.GraphDriverName}}'").strip()
    assert driver == "zfs"
    status = target.check("podman info --format '{{json .Store.GraphStatus}}'")
    assert CONTAINERS in status, status
    root = target.check("podman info --format '{{.Store.GraphRoot}}'").strip()
    assert root == f"{CONTAINERS_MOUNT}/storage"


def test_pool_grew_after_a_resize(target: Target, zfs_root: str) -> None:
    """After podman's `qemu-img resize`, rc.d/growfs (run by fpvm_growfs) resized the freebsd-zfs
    partition (gpart recover + resize) and ran `zpool online -e`: no free tail, nothing left to expand,
    and the pool fills its partition."""
    vdev = _run(target, POOL_VDEV_ARGV).strip().split("\n")[-1].strip()
    geoms: dict[str, list[list[str]]] = {}
    disk = ""
    for line in _run(target, GPART_SHOW_ARGV).split("\n"):
        fields = line.split()
        if fields[:1] == ["=>"]:
            disk = fields[3]
            geoms[disk] = []
        elif fields and disk:
            geoms[disk].append(fields)
    pool_disks = [d for d, rows in geoms.items() if any("freebsd-zfs" in row for row in rows)]
    assert len(pool_disks) == 1, geoms
    disk = pool_disks[0]
    sector = int(target.check(f"diskinfo {shlex.quote(disk)}").split()[1])
    for row in geoms[disk]:
        if "free" in row:  # "- free -"
            assert int(row[1]) * sector < 64 << 20, f"unused space left on {disk}: {row}"
    size, expand = _run(target, POOL_SIZE_ARGV).split()
    assert expand in ("-", "0"), f"the pool could still grow by {expand} bytes (zpool online -e not run)"
    part = next(row for row in geoms[disk] if "freebsd-zfs" in row)
    assert vdev.endswith((part[2], "gpt/rootfs")), (vdev, part)
    assert int(size) >= int(part[1]) * sector * 9 // 10, (size, part)


def test_arc_is_capped_from_the_memory_size(target: Target, zfs_root: str) -> None:
    """rc.d/fpvm_arc set vfs.zfs.arc.max from hw.physmem (rc.conf.d/fpvm_arc; docs/image.md, Memory)."""
    conf = {}
    for line in target.read("/etc/rc.conf.d/fpvm_arc").decode().split("\n"):
        name, sep, value = line.partition("=")
        if sep:
            conf[name] = value.strip('"')
    mem = int(target.check("sysctl -n hw.physmem").strip())
    cap = int(target.check("sysctl -n vfs.zfs.arc.max").strip())
    if conf.get("fpvm_arc_max"):
        expected = int(conf["fpvm_arc_max"])
    else:
        expected = max(mem // 100 * int(conf["fpvm_arc_percent"]), int(conf["fpvm_arc_min_mib"]) << 20)
        expected = min(expected, mem // 2)
    assert cap == expected, (cap, expected, mem)
    assert cap < mem
