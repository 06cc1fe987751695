"""`fpvm build --fs zfs|ufs` (zfs the default): the plans of every method and the overlay of both file
systems, each makefs/mkimg argument held against the manual pages (image_synopsis.py), the dataset
layout against FreeBSD's own ZFS VM image, and every piece of generated shell through `sh -n` or run.

References (freebsd-src): release/tools/vmimage.subr (buildfs, vm_create_disk, vm_install_base with
VMFS=zfs), usr.sbin/makefs/makefs.8, usr.bin/mkimg/mkimg.1, libexec/rc/rc.d/growfs (its zfs branch:
`zpool online -e $pool $rootdev`), libexec/rc/rc.d/zpoolreguid and zpoolupgrade (rcvar zfs_enable),
sys/contrib/openzfs/man/man4/zfs.4 (zfs_arc_max "can be changed dynamically"); poudriere-image(8) and
poudriere's image_zfs.sh.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
from image_synopsis import check_command, check_makefs, check_mkimg

from fpvm.image import builder_vm, overlay, pkgbase, poudriere, recipe
from fpvm_runner import fpvm_main

ARCHES = ["amd64", "aarch64"]
REPO = Path(__file__).resolve().parents[2]

# release/tools/vmimage.subr, buildfs(), VMFS=zfs: the makefs -o arguments after -t zfs ${MAKEFSARGS}
# (with the shell's "\;" unescaped).
VMIMAGE_ZFS_OPTIONS = [
    "poolname=zroot",
    "bootfs=zroot/ROOT/default",
    "rootpath=/",
    "fs=zroot;mountpoint=none",
    "fs=zroot/ROOT;mountpoint=none",
    "fs=zroot/ROOT/default;mountpoint=/",
    "fs=zroot/home;mountpoint=/home",
    "fs=zroot/tmp;mountpoint=/tmp;exec=on;setuid=off",
    "fs=zroot/usr;mountpoint=/usr;canmount=off",
    "fs=zroot/usr/ports;setuid=off",
    "fs=zroot/usr/src",
    "fs=zroot/usr/obj",
    "fs=zroot/var;mountpoint=/var;canmount=off",
    "fs=zroot/var/audit;setuid=off;exec=off",
    "fs=zroot/var/crash;setuid=off;exec=off",
    "fs=zroot/var/log;setuid=off;exec=off",
    "fs=zroot/var/mail;atime=on",
    "fs=zroot/var/tmp;setuid=off",
]


def _plan(tmp_path: Path, *extra: str) -> list[str]:
    out = tmp_path / "out"
    status, stdout, stderr = fpvm_main("build", "--dry-run", "--output-dir", str(out), *extra)
    assert status == 0, stderr
    assert not out.exists()
    return stdout.splitlines()


def _commands(lines: list[str]) -> list[list[str]]:
    return [shlex.split(line) for line in lines if not line.startswith("#")]


# --- plans ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES)
def test_pkgbase_zfs_plan_makes_vmimages_pool_and_boots_it(tmp_path: Path, arch: str) -> None:
    cmds = _commands(_plan(tmp_path, "--method", "pkgbase", "--arch", arch, "--fs", "zfs"))
    makefs = [c for c in cmds if c[0] == "makefs"]
    assert [c[c.index("-t") + 1] for c in makefs] == ["zfs", "msdos"]
    zfs = check_makefs(makefs[0])
    esp = check_makefs(makefs[1])
    # vmimage.subr's layout exactly, plus the containers dataset (last), with -s and -B little as there.
    assert zfs["options"] == [*VMIMAGE_ZFS_OPTIONS, "fs=zroot/containers;mountpoint=/var/db/containers"]
    assert makefs[0][makefs[0].index("-B") + 1] == "little"
    assert int(makefs[0][makefs[0].index("-s") + 1]) % (1 << 20) == 0
    assert str(zfs["image"]).endswith("/rootfs.zfs") and str(zfs["dirs"][0]).endswith("/root")  # type: ignore[index]
    assert esp["type"] == "msdos"
    pool = zfs["pool"]
    assert isinstance(pool, dict) and pool["zroot/ROOT/default"] == {"mountpoint": "/"}
    # every dataset's mount point exists in the tree before makefs maps the tree onto the datasets
    mkdir = next(
        c for c in cmds if c[:2] == ["mkdir", "-p"] and any(a.endswith("/root/var/db/containers") for a in c)
    )
    assert cmds.index(mkdir) < cmds.index(makefs[0])
    stage = str(zfs["dirs"][0])  # type: ignore[index]
    assert sorted(a.removeprefix(stage) for a in mkdir[2:]) == sorted(
        m for m in recipe.zfs_mountpoints() if m != "/"
    )
    assert {"/home", "/tmp", "/usr/ports", "/var/log", "/var/tmp", "/var/db/containers"} <= set(
        recipe.zfs_mountpoints()
    )
    mkimg = next(c for c in cmds if c[0] == "mkimg")
    parts = check_mkimg(mkimg)
    if arch == "amd64":  # BIOS: pmbr + gptzfsboot (vm_create_disk: X86GPTBOOTFILE=i386/gptzfsboot)
        assert mkimg[mkimg.index("-b") + 1].endswith("/boot/pmbr")
        assert parts[0]["type"] == "freebsd-boot" and parts[0]["what"].endswith("/boot/gptzfsboot")
        parts = parts[1:]
    else:
        assert "-b" not in mkimg
    assert [(p["type"], p["label"]) for p in parts] == [("efi", "efiboot0"), ("freebsd-zfs", "rootfs")]
    assert parts[-1]["what"] == str(zfs["image"])  # the root is last: growfs grows the last partition
    loader = next(c for c in cmds if c[0] == "cp" and c[1].endswith("/boot/loader.efi"))
    assert loader[2].endswith({"amd64": "/EFI/BOOT/BOOTX64.EFI", "aarch64": "/EFI/BOOT/BOOTAA64.EFI"}[arch])


@pytest.mark.parametrize("arch", ARCHES)
def test_pkgbase_ufs_plan_passes_the_same_checks(tmp_path: Path, arch: str) -> None:
    cmds = _commands(_plan(tmp_path, "--method", "pkgbase", "--arch", arch, "--fs", "ufs"))
    makefs = [c for c in cmds if c[0] == "makefs"]
    ffs, esp = (check_makefs(c) for c in makefs)
    assert ffs["type"] == "ffs" and ffs["options"] == ["label=rootfs", "version=2", "softupdates=1"]
    assert esp["options"] == ["fat_type=32", "sectors_per_cluster=1", "volume_label=EFISYS"]
    parts = check_mkimg(next(c for c in cmds if c[0] == "mkimg"))
    if arch == "amd64":
        assert parts[0]["what"].endswith("/boot/gptboot")
        parts = parts[1:]
    assert [(p["type"], p["label"]) for p in parts] == [("efi", "efiboot0"), ("freebsd-ufs", "rootfs")]
    assert not any("zfs" in " ".join(c) for c in cmds)


def test_zfs_is_the_default(tmp_path: Path) -> None:
    cmds = _commands(_plan(tmp_path, "--method", "pkgbase", "--arch", "amd64"))
    assert any(c[:3] == ["makefs", "-t", "zfs"] for c in cmds)
    lines = _plan(tmp_path, "--method", "pkgbase", "--arch", "amd64")
    assert any("fpvm image overlay" in line and "--fs zfs" in line for line in lines)
    assert recipe.DEFAULT_FS == "zfs" and recipe.Recipe.__dataclass_fields__["fs"].default == "zfs"


def test_unknown_fs_is_refused() -> None:
    status, _, stderr = fpvm_main("build", "--dry-run", "--fs", "btrfs")
    assert status == 2 and "invalid choice: 'btrfs'" in stderr


@pytest.mark.parametrize("fs", ["zfs", "ufs"])
@pytest.mark.parametrize("arch", ARCHES)
def test_builder_vm_runs_the_same_fs_inside(tmp_path: Path, arch: str, fs: str) -> None:
    lines = _plan(
        tmp_path, "--method", "builder-vm", "--arch", arch, "--fs", fs, "--cache-dir", str(tmp_path / "c")
    )
    inside = [line.split("in the builder VM: ", 1)[1] for line in lines if "in the builder VM: " in line]
    makefs = [shlex.split(line) for line in inside if line.startswith("makefs ")]
    assert [m[m.index("-t") + 1] for m in makefs] == [{"zfs": "zfs", "ufs": "ffs"}[fs], "msdos"]
    for argv in makefs:
        check_makefs(argv)
    mkimg = check_mkimg(shlex.split(next(line for line in inside if line.startswith("mkimg "))))
    assert mkimg[-1]["type"] == f"freebsd-{fs}"
    # the user-data script nuageinit runs passes the same --fs to the build inside (sh -n checked)
    r = recipe.Recipe(release=recipe.parse_release("15.1"), arch=arch, method="builder-vm", fs=fs)
    script = tmp_path / "user-data"
    script.write_text(builder_vm.user_data(r, "fpvm.whl"))
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    build_line = next(line for line in script.read_text().splitlines() if "-m fpvm build" in line)
    argv = shlex.split(build_line.split("python3", 1)[1])
    assert argv[argv.index("--fs") + 1] == fs


@pytest.mark.parametrize("arch", ARCHES)
def test_poudriere_zfs_plan(tmp_path: Path, arch: str) -> None:
    cmds = _commands(_plan(tmp_path, "--method", "poudriere", "--arch", arch))  # zfs: the default
    image = next(c for c in cmds if "image" in c and "poudriere" in c)
    # poudriere-image(8): -t zfs (zfs+gpt: legacy and UEFI boot code); ENVIRONMENT names the pool
    assert image[:4] == ["env", "ZFS_POOL_NAME=zroot", "ZFS_BEROOT_NAME=ROOT", "ZFS_BOOTFS_NAME=default"]
    rest = image[4:]
    assert rest[:2] == ["poudriere", "image"] and rest[rest.index("-t") + 1] == "zfs"
    assert rest[rest.index("-c") + 1].endswith("/overlay") and rest[rest.index("-A") + 1].endswith(".sh")
    ufs = next(
        c
        for c in _commands(_plan(tmp_path, "--method", "poudriere", "--arch", arch, "--fs", "ufs"))
        if c[:2] == ["poudriere", "image"]
    )
    assert ufs[ufs.index("-t") + 1] == "usb"


@pytest.mark.parametrize("fs", ["zfs", "ufs"])
def test_poudriere_post_script_parses_and_makes_the_containers_dataset(tmp_path: Path, fs: str) -> None:
    text = poudriere.post_script(Path("/tmp/fpvm.whl"), fs)
    script = tmp_path / "post.sh"
    script.write_text(text)
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    creates = [shlex.split(line) for line in text.splitlines() if line.startswith("zfs create")]
    if fs == "zfs":
        # image_zfs.sh imports the pool as ${zroot} (zpool create -t) under the altroot ${WRKDIR}/world
        assert creates == [["zfs", "create", "-o", "mountpoint=/var/db/containers", "${zroot}/containers"]]
        assert "/dev/ufs/" not in text  # no UFS label on a pool
    else:
        assert creates == [] and "/dev/ufs/fpvm" in text
    assert "efiboot0" in text  # poudriere's ESP has no GPT label in either image type


# --- the overlay of both file systems ---------------------------------------------------------------


def _stub_rc() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    return {"fpvm": "#!/bin/sh\n# PROVIDE: fpvm\n"}, {"fpvm": {"fpvm_enable": "YES"}}


def _tree(tmp_path: Path, fs: str, arch: str = "amd64") -> Path:
    root = tmp_path / f"{arch}-{fs}"
    items = overlay.entries(arch, guest_rc=_stub_rc, compat=lambda: {}, fs=fs)
    overlay.write(root, items)
    return root


def _values(path: Path) -> dict[str, str]:
    """An rc.conf.d file as sh reads it (source it, print every variable back)."""
    names = [line.split("=", 1)[0] for line in path.read_text().splitlines() if "=" in line]
    probe = "; ".join(f'printf "%s\\n" "${{{n}}}"' for n in names)
    out = subprocess.run(["sh", "-c", f'. "$1"; {probe}', "sh", str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and not out.stderr, out.stderr
    return dict(zip(names, out.stdout.splitlines(), strict=True))


def _loader(path: Path) -> dict[str, str]:
    """loader.conf(5) lines: name="value" (names may hold dots, so not sh)."""
    out = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r'(?P<name>[A-Za-z_][A-Za-z0-9_.]*)="(?P<value>[^"]*)"', line)
        assert match, line
        out[match["name"]] = match["value"]
    return out


@pytest.mark.parametrize("arch", ARCHES)
def test_zfs_overlay(tmp_path: Path, arch: str) -> None:
    root = _tree(tmp_path, "zfs", arch)
    # loader: zfs.ko (vmimage.subr adds zfs_load=YES); no vfs.root.mountfrom: the bootfs property names it
    loader = {}
    for conf in (root / "boot/loader.conf.d").iterdir():
        loader.update(_loader(conf))
    assert loader["zfs_load"] == "YES"
    assert not any("mountfrom" in name for name in loader)
    # rc.conf.d: zfs_enable for each rc.d script whose rcvar it is; reguid + upgrade as vmimage.subr
    for service in ("zfs", "zpool", "zfsbe", "zpoolreguid", "zpoolupgrade"):
        assert _values(root / "etc/rc.conf.d" / service)["zfs_enable"] == "YES", service
    assert _values(root / "etc/rc.conf.d/zpoolreguid")["zpool_reguid"] == "zroot"
    assert _values(root / "etc/rc.conf.d/zpoolupgrade")["zpool_upgrade"] == "zroot"
    assert _values(root / "etc/rc.conf.d/growfs")["growfs_enable"] == "YES"
    # fstab: no line for / (vmimage.subr writes none for zfs); the ESP and fdescfs stay
    table = {
        f[1]: f
        for f in (line.split() for line in (root / "etc/fstab").read_text().splitlines())
        if f and not f[0].startswith("#")
    }
    assert set(table) == {"/boot/efi", "/dev/fd"} and table["/boot/efi"][0] == "/dev/gpt/efiboot0"
    # containers-storage.conf(5): the zfs driver on the containers dataset
    storage = tomllib.loads((root / "usr/local/etc/containers/storage.conf").read_text())
    assert storage["storage"]["driver"] == "zfs"
    assert storage["storage"]["graphroot"] == "/var/db/containers/storage"
    assert storage["storage"]["options"]["zfs"] == {"fsname": "zroot/containers"}
    arc = root / "usr/local/etc/rc.d/fpvm_arc"
    assert arc.stat().st_mode & 0o777 == 0o555
    assert subprocess.run(["sh", "-n", str(arc)]).returncode == 0


def test_ufs_overlay_has_no_zfs_pieces(tmp_path: Path) -> None:
    root = _tree(tmp_path, "ufs")
    assert not (root / "boot/loader.conf.d/fpvm-zfs.conf").exists()
    assert not (root / "usr/local/etc/rc.d/fpvm_arc").exists()
    for service in ("zfs", "zpool", "zpoolreguid", "fpvm_arc"):
        assert not (root / "etc/rc.conf.d" / service).exists()
    storage = tomllib.loads((root / "usr/local/etc/containers/storage.conf").read_text())
    assert storage == {
        "storage": {
            "driver": "vfs",
            "runroot": "/var/run/containers/storage",
            "graphroot": "/var/db/containers/storage",
        }
    }
    assert "/dev/gpt/rootfs" in (root / "etc/fstab").read_text()


def test_overlay_command_takes_fs(tmp_path: Path) -> None:
    status, stdout, stderr = fpvm_main(
        "image", "overlay", str(tmp_path / "u"), "--arch", "amd64", "--fs", "ufs"
    )
    assert status == 0, stderr
    assert "/usr/local/etc/rc.d/fpvm_arc" not in stdout.splitlines()
    status, stdout, stderr = fpvm_main("image", "overlay", str(tmp_path / "z"), "--arch", "amd64")
    assert status == 0, stderr
    assert "/usr/local/etc/rc.d/fpvm_arc" in stdout.splitlines()
    assert fpvm_main("image", "overlay", str(tmp_path / "x"), "--arch", "amd64", "--fs", "ext4")[0] == 2
    with pytest.raises(overlay.OverlayError, match="unknown file system 'ext4'"):
        overlay.entries("amd64", guest_rc=_stub_rc, compat=lambda: {}, fs="ext4")


# --- the ARC cap, run with sh against a stubbed rc.subr and sysctl ----------------------------------


def _run_arc(tmp_path: Path, physmem: int, conf: dict[str, str], arc_present: bool = True) -> list[str]:
    """Run rc.d/fpvm_arc start; returns the sysctl writes it made."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "sysctl.log"
    log.write_text("")
    (bin_dir / "sysctl").write_text(
        "#!/bin/sh\n"
        f'case "$*" in\n'
        f'"-n hw.physmem") echo {physmem} ;;\n'
        f'"-n vfs.zfs.arc.max") {"echo 0" if arc_present else "exit 1"} ;;\n'
        f'*) echo "$*" >> {log} ;;\n'
        "esac\n"
    )
    (bin_dir / "sysctl").chmod(0o755)
    assignments = "".join(f'{k}="{v}"\n' for k, v in conf.items())
    stub = tmp_path / "rc.subr"
    stub.write_text(
        "load_rc_config() { :; }\n"
        f"{assignments}"
        'run_rc_command() { case "$1" in start) $start_cmd ;; esac; }\n'
    )
    script = tmp_path / "fpvm_arc"
    script.write_text(overlay.ARC_RC.decode().replace(". /etc/rc.subr", f". {stub}"))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["sh", str(script), "start"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return log.read_text().split()


DEFAULTS = recipe.zfs_rc_conf()["fpvm_arc"]


@pytest.mark.parametrize(
    ("physmem", "expected"),
    [
        (2 << 30, (2 << 30) // 100 * 25),  # a podman default VM: ~512 MiB, 1.5 GiB left for containers
        (8 << 30, (8 << 30) // 100 * 25),
        (768 << 20, 256 << 20),  # the floor
        (400 << 20, 200 << 20),  # never more than half of memory
    ],
)
def test_arc_cap_follows_the_memory_size(tmp_path: Path, physmem: int, expected: int) -> None:
    assert _run_arc(tmp_path, physmem, DEFAULTS) == [f"vfs.zfs.arc.max={expected}"]


def test_arc_cap_can_be_set_or_left_alone(tmp_path: Path) -> None:
    assert _run_arc(tmp_path, 4 << 30, {**DEFAULTS, "fpvm_arc_max": "1073741824"}) == [
        "vfs.zfs.arc.max=1073741824"
    ]
    assert _run_arc(tmp_path, 4 << 30, DEFAULTS, arc_present=False) == []  # no zfs.ko: nothing to cap


def test_arc_script_runs_before_containers() -> None:
    from fpvm.guest import rcd

    header = rcd.rcorder_header(overlay.ARC_RC)
    assert header["PROVIDE"] == ["fpvm_arc"]
    assert {"fpvm", "podman", "podman_service"} <= set(header["BEFORE"])
    assert 'rcvar="fpvm_arc_enable"' in overlay.ARC_RC.decode()


# --- growth: rc.d/fpvm_growfs reruns FreeBSD's growfs, whose zfs branch needs no change -------------


def test_growth_reuses_base_growfs_for_both_file_systems(tmp_path: Path) -> None:
    for fs in ("zfs", "ufs"):
        text = (_tree(tmp_path, fs) / "usr/local/etc/rc.d/fpvm_growfs").read_text()
        assert "/etc/rc.d/growfs onestart" in text
    # the root partition is the disk's last, so gpart resize -i (growfs) can take the new space
    for arch in ARCHES:
        r = recipe.Recipe(release=recipe.parse_release("15.1"), arch=arch, method="pkgbase")
        argv = pkgbase.mkimg_argv(r, Path("/s"), Path("/e.img"), Path("/r.zfs"), Path("/o.raw"))
        assert argv[argv.index("-o") - 1].startswith("freebsd-zfs/rootfs:=")


# --- the FreeBSD checks' own commands against the synopses -----------------------------------------


def test_freebsd_check_commands_follow_the_man_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.syspath_prepend(str(REPO / "tests/freebsd"))  # for its `from freebsd_target import`
    spec = importlib.util.spec_from_file_location("fpvm_freebsd_test_zfs", REPO / "tests/freebsd/test_zfs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    commands = {name: value for name, value in vars(module).items() if name.endswith("_ARGV")}
    assert len(commands) >= 5
    for argv in commands.values():
        check_command(list(argv))
    assert module.POOL == recipe.ZFS_POOL and module.BOOTFS == recipe.ZFS_BOOTFS
    assert module.CONTAINERS == recipe.CONTAINERS_DATASET
    assert module.CONTAINERS_MOUNT == recipe.CONTAINERS_MOUNT


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (
            ["makefs", "-t", "zfs", "-s", "1g", "-o", "poolname=z", "-o", "fs=z/a/b;mountpoint=/", "i", "d"],
            "z/a must exist",
        ),
        (
            ["makefs", "-t", "zfs", "-s", "1g", "-o", "poolname=z", "-o", "fs=z;quota=1g", "i", "d"],
            "not a settable property",
        ),
        (
            [
                "makefs",
                "-t",
                "zfs",
                "-o",
                "poolname=z",
                "-o",
                "rootpath=/",
                "-o",
                "fs=z;mountpoint=/z",
                "i",
                "d",
            ],
            "no dataset has mountpoint / (rootpath)",
        ),
        (
            [
                "makefs",
                "-t",
                "zfs",
                "-o",
                "poolname=z",
                "-o",
                "bootfs=z/x",
                "-o",
                "fs=z;mountpoint=/z",
                "i",
                "d",
            ],
            "bootfs z/x is not a dataset",
        ),
        (
            ["makefs", "-t", "zfs", "-o", "bootfs=z/x", "-o", "fs=z;mountpoint=/z", "i", "d"],
            "poolname must be specified",
        ),
        (["makefs", "-t", "ffs", "-o", "label=x", "-q", "i", "d"], "-q is not in the synopsis"),
        (["makefs", "-t", "ffs", "-o", "poolname=x", "i", "d"], "unknown option 'poolname'"),
        (["makefs", "-t", "ffs", "-s", "4 GB", "i", "d"], "not a makefs(8) size"),
    ],
)
def test_the_synopsis_checker_refuses_what_makefs_would(argv: list[str], why: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(why)):
        check_makefs(argv)


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["mkimg", "-s", "gpt", "-p", "freebsd-zfsx/rootfs:=r", "-o", "o"], "not a gpart(8) type"),
        (["mkimg", "-p", "efi:=e", "-s", "gpt", "-o", "o"], "follow -s scheme"),
        (["mkimg", "-s", "gpt", "-p", "efi=e", "-o", "o"], "not type[/label]:=file"),
        (["mkimg", "-s", "gpt", "-o", "o", "extra"], "too many operands"),
    ],
)
def test_the_synopsis_checker_refuses_what_mkimg_would(argv: list[str], why: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(why)):
        check_mkimg(argv)
