"""`fpvm build --dry-run` for every method x arch: the commands, in order, with the flags that matter."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from fpvm import arch as archmod
from fpvm.image import recipe
from fpvm_runner import fpvm_main

METHODS = ["pkgbase", "builder-vm", "poudriere"]
ARCHES = ["amd64", "aarch64"]


def _plan(tmp_path: Path, *extra: str) -> list[str]:
    out = tmp_path / "out"
    status, stdout, stderr = fpvm_main("build", "--dry-run", "--output-dir", str(out), *extra)
    assert status == 0, stderr
    assert not out.exists(), "a dry run creates nothing"
    return stdout.splitlines()


def _commands(lines: list[str]) -> list[list[str]]:
    return [shlex.split(line) for line in lines if not line.startswith("#")]


def _find(lines: list[str], *needles: str) -> int:
    for index, line in enumerate(lines):
        if all(n in line for n in needles):
            return index
    raise AssertionError(f"no line with {needles!r} in plan:\n" + "\n".join(lines))


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("method", METHODS)
def test_every_plan_ends_with_the_outputs(tmp_path: Path, method: str, arch: str) -> None:
    lines = _plan(tmp_path, "--method", method, "--arch", arch)
    name = f"fpvm-15.1-RELEASE-{arch}.raw"
    tail = lines[-2:]
    assert f"compress {tmp_path}/out/{name} to {tmp_path}/out/{name}.zst" in tail[0]
    assert tail[1] == f"# fpvm: write {tmp_path}/out/{name}.zst.sha256"


@pytest.mark.parametrize("arch", ARCHES)
def test_pkgbase_plan(tmp_path: Path, arch: str) -> None:
    lines = _plan(tmp_path, "--method", "pkgbase", "--arch", arch, "--fs", "ufs")  # zfs: test_image_zfs.py
    cmds = _commands(lines)
    pkg_installs = [c for c in cmds if c[0] == "pkg" and "install" in c]
    assert len(pkg_installs) == 2
    base, ports = pkg_installs
    for argv in pkg_installs:
        assert f"ABI=FreeBSD:15:{arch}" in argv and "IGNORE_OSVERSION=yes" in argv
        assert argv[argv.index("--rootdir") + 1].endswith("/root")
    assert base[base.index("-r") + 1] == "FreeBSD-base"
    for package in (
        "FreeBSD-set-minimal",
        "FreeBSD-kernel-generic",
        "FreeBSD-bootloader",
        "FreeBSD-ssh",
        "FreeBSD-pf",
    ):
        assert package in base
    assert ("FreeBSD-dtb" in base) == (arch == "aarch64")
    assert ports[ports.index("-r") + 1] == "FreeBSD-ports"
    assert ports[-5:] == ["podman-suite", "ocijail", "sudo", "bash", "python3"]
    # order: packages, overlay, databases, file systems, disk
    order = [
        _find(lines, "pkg ", "update"),
        _find(lines, "install -r FreeBSD-base"),
        _find(lines, "install -r FreeBSD-ports"),
        _find(lines, "unpack", ".whl"),
        _find(lines, "fpvm image overlay", f"--arch {arch}", "sshd_config"),
        _find(lines, "pwd_mkdb -i -p -d"),
        _find(lines, "cap_mkdb"),
        _find(lines, "services_mkdb -q -o"),
        _find(lines, "makefs -t ffs"),
        _find(lines, "makefs -t msdos"),
        _find(lines, "mkimg -s gpt"),
    ]
    assert order == sorted(order)
    makefs = next(c for c in cmds if c[:3] == ["makefs", "-t", "ffs"])
    assert {"label=rootfs", "version=2", "softupdates=1"} <= set(makefs)
    assert makefs[makefs.index("-B") + 1] == "little"
    esp = next(c for c in cmds if c[:3] == ["makefs", "-t", "msdos"])
    assert "fat_type=32" in esp and "volume_label=EFISYS" in esp and esp[esp.index("-s") + 1] == "33292k"
    loader = next(c for c in cmds if c[0] == "cp" and c[1].endswith("/boot/loader.efi"))
    assert loader[2].endswith({"amd64": "/EFI/BOOT/BOOTX64.EFI", "aarch64": "/EFI/BOOT/BOOTAA64.EFI"}[arch])
    mkimg = next(c for c in cmds if c[0] == "mkimg")
    parts = [mkimg[i + 1] for i, a in enumerate(mkimg) if a == "-p"]
    assert mkimg[:5] == ["mkimg", "-s", "gpt", "-f", "raw"]
    if arch == "amd64":  # SeaBIOS: protective MBR + gptboot; UEFI: the ESP
        assert mkimg[mkimg.index("-b") + 1].endswith("/boot/pmbr")
        assert parts[0].startswith("freebsd-boot/bootfs:=") and parts[0].endswith("/boot/gptboot")
        parts = parts[1:]
    else:
        assert "-b" not in mkimg
    assert parts[0].startswith("efi/efiboot0:=") and parts[1].startswith("freebsd-ufs/rootfs:=")
    assert len(parts) == 2


@pytest.mark.parametrize("arch", ARCHES)
def test_builder_vm_plan(tmp_path: Path, arch: str) -> None:
    lines = _plan(tmp_path, "--method", "builder-vm", "--arch", arch, "--cache-dir", str(tmp_path / "c"))
    host = archmod.host()
    part = "amd64" if host == "amd64" else "arm64-aarch64"
    assert lines[0].startswith(
        f"# fpvm: download https://download.freebsd.org/releases/VM-IMAGES/15.1-RELEASE/{host}/Latest/"
        f"FreeBSD-15.1-RELEASE-{part}-BASIC-CLOUDINIT-ufs.raw.xz into {tmp_path}/c"
    )
    assert "CHECKSUM.SHA256" in lines[0]
    cmds = _commands(lines)
    creates = [c for c in cmds if c[:2] == ["qemu-img", "create"]]
    assert creates[0][2:5] == ["-q", "-f", "qcow2"] and creates[0][creates[0].index("-F") + 1] == "raw"
    assert creates[1][2:5] == ["-q", "-f", "raw"] and creates[1][-1] == str(4 << 30)
    qemu = next(c for c in cmds if c[0].startswith("qemu-system-"))
    assert qemu[0] == f"qemu-system-{archmod.qemu_name(host)}"  # the builder runs natively
    assert "-no-reboot" in qemu
    assert qemu[qemu.index("-serial") + 1] == "chardev:serial0"
    assert f"path={tmp_path}/out/fpvm-15.1-RELEASE-{arch}.build.log" in " ".join(qemu)
    assert " ".join(qemu).count("virtio-blk-pci") == 3
    order = [
        _find(lines, "qemu-img create -q -f qcow2"),
        _find(lines, "cidata.iso"),
        _find(lines, "in the builder VM: pkg --rootdir"),
        _find(lines, "qemu-system-"),
        _find(lines, "FPVM-BUILD-OK"),
    ]
    assert order == sorted(order)
    inside = [line.split("in the builder VM: ", 1)[1] for line in lines if "in the builder VM: " in line]
    assert any(f"ABI=FreeBSD:15:{arch}" in line and "install -r FreeBSD-base" in line for line in inside)
    assert any(line.startswith("mkimg -s gpt") for line in inside)
    assert inside[-2:] == [
        f"dd if=/var/fpvm/out/fpvm-15.1-RELEASE-{arch}.raw of=/dev/vtbd1 bs=1m",
        "shutdown -p now",
    ]


@pytest.mark.parametrize("arch", ARCHES)
def test_poudriere_plan(tmp_path: Path, arch: str) -> None:
    lines = _plan(tmp_path, "--method", "poudriere", "--arch", arch, "--fs", "ufs")  # zfs: test_image_zfs.py
    cmds = _commands(lines)
    machine = {"amd64": "amd64.amd64", "aarch64": "arm64.aarch64"}[arch]
    jail = next(c for c in cmds if c[:3] == ["poudriere", "jail", "-i"])
    create = jail[jail.index("||") + 1 :]
    assert create[:3] == ["poudriere", "jail", "-c"]
    assert create[create.index("-v") + 1] == "15.1-RELEASE" and create[create.index("-a") + 1] == machine
    assert create[create.index("-K") + 1] == "GENERIC"
    bulk = next(c for c in cmds if c[:2] == ["poudriere", "bulk"])
    image = next(c for c in cmds if c[:2] == ["poudriere", "image"])
    assert image[image.index("-t") + 1] == "usb" and image[image.index("-s") + 1] == "4096m"
    assert image[image.index("-f") + 1] == bulk[bulk.index("-f") + 1]
    assert image[image.index("-c") + 1].endswith("/overlay") and image[image.index("-A") + 1].endswith(".sh")
    assert "sysutils/podman-suite" in lines[0]
    # poudriere-ports(8): a ports tree made once from git (-c -p NAME -m git+https -U URL), updated, used.
    ports_create = _find(
        lines, "poudriere ports -c -p fpvm -m git+https -U https://git.FreeBSD.org/ports.git"
    )
    order = [ports_create, _find(lines, "poudriere ports -u -p fpvm"), _find(lines, "poudriere bulk")]
    assert order == sorted(order) and order[-1] < _find(lines, "poudriere image")
    assert bulk[bulk.index("-p") + 1] == image[image.index("-p") + 1] == "fpvm"
    assert bulk[bulk.index("-j") + 1] == image[image.index("-j") + 1] == jail[jail.index("-j") + 1]


def test_post_script_parses_with_sh(tmp_path: Path) -> None:
    import subprocess

    from fpvm.image import poudriere

    script = tmp_path / "post.sh"
    script.write_text(poudriere.post_script(Path("/tmp/fpvm.whl")))
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0


def test_qcow2_and_xz_outputs(tmp_path: Path) -> None:
    lines = _plan(tmp_path, "--method", "pkgbase", "--arch", "amd64", "--format", "qcow2", "--compress", "xz")
    convert = _commands(lines)[-1]
    assert convert[:6] == ["qemu-img", "convert", "-f", "raw", "-O", "qcow2"]
    assert convert[-1] == f"{tmp_path}/out/fpvm-15.1-RELEASE-amd64.qcow2"
    assert lines[-1] == f"# fpvm: write {tmp_path}/out/fpvm-15.1-RELEASE-amd64.qcow2.xz.sha256"


def test_fourteen_builds_with_a_warning(tmp_path: Path) -> None:
    status, stdout, stderr = fpvm_main(
        "build",
        "--dry-run",
        "--release",
        "14.3",
        "--arch",
        "amd64",
        "--method",
        "pkgbase",
        "--output-dir",
        str(tmp_path),
    )
    assert status == 0
    assert "warning: 14.3-RELEASE: FreeBSD 14 has no p9fs" in stderr
    assert "ABI=FreeBSD:14:amd64" in stdout


@pytest.mark.parametrize("release", ["13.2", "15.1-CURRENT", "fifteen"])
def test_unknown_release_is_refused(release: str) -> None:
    status, _, stderr = fpvm_main("build", "--dry-run", "--release", release)
    assert status == 2
    assert "release" in stderr and "Traceback" not in stderr


def test_unknown_arch_is_refused() -> None:
    status, _, stderr = fpvm_main("build", "--dry-run", "--arch", "riscv64")
    assert status == 2
    assert "unknown architecture 'riscv64'" in stderr


def test_freebsd_methods_refuse_other_hosts(tmp_path: Path) -> None:
    import platform

    if platform.system() == "FreeBSD":
        return
    status, _, stderr = fpvm_main("build", "--method", "pkgbase", "--output-dir", str(tmp_path))
    assert status == 2 and "runs on a FreeBSD host" in stderr


def test_settings_table_drives_the_options() -> None:
    from image_support import image_parser

    help_text = image_parser().parse_args(["build"])  # defaults come from the table
    for setting in recipe.SETTINGS:
        assert hasattr(help_text, setting.dest)
    assert help_text.release == recipe.DEFAULT_RELEASE and help_text.compress == "zst"


def test_recipe_defaults_follow_the_host() -> None:
    from image_support import image_parser

    args = image_parser().parse_args(["build"])
    assert recipe.from_args(args, "Linux", "amd64").method == "builder-vm"
    assert recipe.from_args(args, "Darwin", "aarch64").arch == "aarch64"
    assert recipe.from_args(args, "FreeBSD", "amd64").method == "pkgbase"
    r = recipe.from_args(args, "Linux", "amd64")
    assert r.output_name == "fpvm-15.1-RELEASE-amd64.raw.zst"
    assert r.pkg_repos()["FreeBSD-base"] == "pkg+https://pkg.FreeBSD.org/FreeBSD:15:amd64/base_release_1"


def test_zstd_level_option(tmp_path: Path) -> None:
    lines = _plan(tmp_path, "--method", "pkgbase", "--arch", "amd64", "--zstd-level", "3")
    assert "(zstd level 3, all cores)" in lines[-2]
    assert "(zstd level 19, all cores)" in _plan(tmp_path, "--method", "pkgbase", "--arch", "amd64")[-2]
    status, _, stderr = fpvm_main("build", "--dry-run", "--zstd-level", "23")
    assert status == 2 and "zstd levels go from 1 to 22" in stderr


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("method", METHODS)
def test_dry_run_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, arch: str
) -> None:
    """Issue 6: ``--dry-run`` prints the plan and exits 0 without starting a process or downloading."""
    import subprocess
    import urllib.request

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a dry run did something: {args!r}")

    for name in ("Popen", "run", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    cache = tmp_path / "cache"
    lines = _plan(tmp_path, "--method", method, "--arch", arch, "--cache-dir", str(cache))
    assert lines and not cache.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("release", ["15.1-RELEASE", "14.3"])
def test_pkg_repositories_check_signatures(tmp_path: Path, release: str) -> None:
    """pkg(8) refuses unsigned catalogues only when the repository says so: every repo must."""
    from image_support import image_parser

    from fpvm.image import pkgbase

    args = image_parser().parse_args(["build", "--release", release, "--arch", "amd64"])
    r = recipe.from_args(args, "FreeBSD", "amd64")
    confs = pkgbase.repo_conf(r)
    assert sorted(confs) == ["FreeBSD-base.conf", "FreeBSD-ports.conf"]
    for name, text in confs.items():
        assert 'signature_type: "fingerprints"' in text, name
        assert f'url: "{r.pkg_repos()[name.removesuffix(".conf")]}"' in text
    major = r.release.major
    base_keys = f"/usr/share/keys/pkgbase-{major}" if major >= 15 else "/usr/share/keys/pkg"
    assert f'fingerprints: "{base_keys}"' in confs["FreeBSD-base.conf"]
    assert 'fingerprints: "/usr/share/keys/pkg"' in confs["FreeBSD-ports.conf"]
    # ... and the plan copies those key directories into the staging root before pkg update.
    lines = _plan(tmp_path, "--method", "pkgbase", "--arch", "amd64", "--release", release)
    copy = _find(lines, "cp -R", "/usr/share/keys/")
    assert base_keys in lines[copy] and copy < _find(lines, "pkg ", "update")
