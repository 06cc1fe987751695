"""The overlay tree, checked with the real tools that will read it: sh, visudo, OpenSSH's sshd."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from image_support import FREEBSD_SSHD_CONFIG

from fpvm.image import overlay, recipe
from fpvm_runner import fpvm_main

RELEASE_15 = recipe.parse_release("15.1-RELEASE")
RELEASE_14 = recipe.parse_release("14.3")
RC_STUB = "#!/bin/sh\n# PROVIDE: fpvm\n. /etc/rc.subr\nname=fpvm\nrcvar=fpvm_enable\nload_rc_config $name\n"
COMPAT_STUB = {"chattr": "#!/bin/sh\nexit 0\n", "systemctl": "#!/bin/sh\nexit 0\n"}
# rc.conf(5) and loader.conf(5) lines fpvm writes: name="value"
ASSIGNMENT = re.compile(r'^(?P<name>[A-Za-z_][A-Za-z0-9_.]*)="(?P<value>[^"\\$`]*)"$')


def _stub_rc() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    return {"fpvm": RC_STUB}, {"fpvm": {"fpvm_enable": "YES"}}


def _tree(tmp_path: Path, arch: str, release: recipe.Release = RELEASE_15, fs: str = "ufs") -> Path:
    """The overlay with stub guest pieces; UFS unless asked (tests/image/test_image_zfs.py has ZFS's)."""
    root = tmp_path / arch
    items = overlay.entries(arch, release, "fpvm", guest_rc=_stub_rc, compat=lambda: COMPAT_STUB, fs=fs)
    overlay.write(root, items)
    return root


def _assignments(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = ASSIGNMENT.match(line)
        assert match, f'{path}: not a quoted name="value" line: {line!r}'
        values[match["name"]] = match["value"]
    return values


@pytest.mark.parametrize("fs", ["ufs", "zfs"])
@pytest.mark.parametrize("arch", ["amd64", "aarch64"])
def test_rc_scripts_parse_with_sh(tmp_path: Path, arch: str, fs: str) -> None:
    root = _tree(tmp_path, arch, fs=fs)
    scripts = sorted((root / "usr/local/etc/rc.d").iterdir())
    expected = ["fpvm", "fpvm_arc", "fpvm_growfs"] if fs == "zfs" else ["fpvm", "fpvm_growfs"]
    assert [p.name for p in scripts] == expected
    for script in scripts:
        assert os.access(script, os.X_OK)
        result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


def test_growfs_script_reruns_growfs_on_every_boot(tmp_path: Path) -> None:
    text = (_tree(tmp_path, "amd64") / "usr/local/etc/rc.d/fpvm_growfs").read_text()
    assert "# PROVIDE: fpvm_growfs" in text
    keywords = [line for line in text.splitlines() if line.startswith("# KEYWORD:")]
    assert keywords == ["# KEYWORD: nojail"]  # the point: not a first-boot-only script
    assert "/etc/rc.d/growfs onestart" in text
    assert 'rcvar="growfs_enable"' in text


@pytest.mark.parametrize("arch", ["amd64", "aarch64"])
def test_rc_conf_d_is_quoted_assignments_that_sh_reads(tmp_path: Path, arch: str) -> None:
    root = _tree(tmp_path, arch)
    files = {p.name: p for p in (root / "etc/rc.conf.d").iterdir()}
    enabled: dict[str, str] = {}
    for name, path in files.items():
        values = _assignments(path)
        assert "." not in "".join(values), f"{name}: rc.conf names must be shell variables"
        # sh itself must agree with the regex: source the file and print every variable back.
        probe = "; ".join(f'printf "%s\\n" "${{{k}}}"' for k in values)
        out = subprocess.run(["sh", "-c", f". {path}; {probe}"], capture_output=True, text=True, check=True)
        assert out.stdout.splitlines() == list(values.values())
        enabled.update(values)
    for service in ("sshd", "podman_service", "growfs", "pf", "linux", "fpvm"):
        assert enabled[f"{service}_enable"] == "YES", service
        assert service in files, f"one file per service: {service}"
    assert enabled["ifconfig_vtnet0"] == "DHCP" and "network" in files
    assert enabled["hostname"] == "fpvm" and "hostname" in files
    assert enabled["growfs_swap_size"] == "0"
    assert enabled["podman_service_api_socket"] == "/var/run/podman/podman.sock"
    assert "unix:///var/run/podman/podman.sock" in enabled["podman_service_flags"]


@pytest.mark.parametrize("arch", ["amd64", "aarch64"])
def test_loader_conf_d_loads_the_guest_modules(tmp_path: Path, arch: str) -> None:
    root = _tree(tmp_path, arch)
    loader: dict[str, str] = {}
    for path in sorted((root / "boot/loader.conf.d").iterdir()):
        assert path.suffix == ".conf"  # the loader reads *.conf from loader_conf_dirs
        loader.update(_assignments(path))
    for module in ("virtio_p9fs", "virtio_console", "pf", "fusefs"):
        assert loader[f"{module}_load"] == "YES"
    assert loader["autoboot_delay"] == "1"
    assert loader["boot_multicons"] == "YES" and loader["boot_serial"] == "YES"
    expected = {"amd64": "comconsole,vidconsole", "aarch64": "efi"}[arch]
    assert loader["console"] == expected


def test_fstab_mounts_by_gpt_label_and_fdescfs(tmp_path: Path) -> None:
    lines = [
        line.split()
        for line in (_tree(tmp_path, "amd64") / "etc/fstab").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert all(len(fields) == 6 for fields in lines)
    table = {fields[1]: fields for fields in lines}
    assert table["/"][:3] == ["/dev/gpt/rootfs", "/", "ufs"]
    assert table["/boot/efi"][0] == "/dev/gpt/efiboot0"
    assert table["/dev/fd"][:3] == ["fdesc", "/dev/fd", "fdescfs"]


def test_links_files_and_modes(tmp_path: Path) -> None:
    root = _tree(tmp_path, "aarch64")
    assert os.readlink(root / "run") == "var/run"
    assert os.readlink(root / "usr/bin/bash") == "/usr/local/bin/bash"
    assert (root / "firstboot").read_bytes() == b""
    assert (root / "etc/sysctl.conf.local").read_text().splitlines()[-1] == "net.pf.filter_local=1"
    assert (root / "usr/local/etc/sudoers.d/fpvm").stat().st_mode & 0o7777 == 0o440
    for name, text in COMPAT_STUB.items():
        launcher = root / "usr/local/libexec/fpvm/linux-compat" / name
        assert launcher.read_text() == text and launcher.stat().st_mode & 0o777 == 0o755
    assert (root / "usr/local/bin/fpvm").read_text().startswith("#!/usr/local/bin/python3\n")
    assert 'driver = "vfs"' in (root / "usr/local/etc/containers/storage.conf").read_text()


def test_pf_conf_has_podman_nat_and_rdr_anchors(tmp_path: Path) -> None:
    text = (_tree(tmp_path, "amd64") / "etc/pf.conf").read_text()
    assert 'v4egress_if = "vtnet0"' in text
    assert "nat on $v4egress_if inet from <cni-nat> to any -> ($v4egress_if)" in text
    assert 'rdr-anchor "cni-rdr/*"' in text and 'nat-anchor "cni-rdr/*"' in text
    assert "table <cni-nat>" in text


def test_second_write_changes_nothing(tmp_path: Path) -> None:
    items = overlay.entries("amd64", RELEASE_15, guest_rc=_stub_rc, compat=lambda: COMPAT_STUB)
    first = overlay.write(tmp_path, items)
    assert sorted(first) == sorted(i.path for i in items)
    assert overlay.write(tmp_path, items) == []


def test_write_refuses_symlinked_parents(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root/etc").symlink_to(tmp_path / "outside")
    with pytest.raises(overlay.OverlayError, match="symbolic link"):
        overlay.write(tmp_path / "root", [overlay.Entry("/etc/pf.conf", b"x")])
    assert list((tmp_path / "outside").iterdir()) == []


def test_unquotable_values_are_refused() -> None:
    with pytest.raises(overlay.OverlayError, match="hostname"):
        overlay.shell_assignments({"hostname": 'a"b'})


def test_sudoers_passes_visudo(tmp_path: Path) -> None:
    path = _tree(tmp_path, "amd64") / "usr/local/etc/sudoers.d/fpvm"
    result = subprocess.run(["visudo", "-c", "-f", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = path.read_text()
    assert 'secure_path="/usr/local/libexec/fpvm/linux-compat:' in text
    assert "NOPASSWD" not in text  # who may sudo is the guest agent's sudoers file


def test_visudo_would_catch_a_broken_sudoers(tmp_path: Path) -> None:
    """The check above is not vacuous: visudo rejects what the overlay must never contain."""
    bad = tmp_path / "bad"
    bad.write_text("%wheel ALL=(ALL NOPASSWD ALL\n")
    bad.chmod(0o440)
    assert subprocess.run(["visudo", "-c", "-f", str(bad)], capture_output=True).returncode != 0


def test_base_edit_puts_include_first_once(tmp_path: Path) -> None:
    config = tmp_path / "etc/ssh/sshd_config"
    config.parent.mkdir(parents=True)
    config.write_text(FREEBSD_SSHD_CONFIG)
    assert overlay.apply_base_edits(tmp_path) is True
    assert overlay.apply_base_edits(tmp_path) is False
    text = config.read_text()
    assert text.splitlines()[0] == "Include /etc/ssh/sshd_config.d/*.conf"
    assert text.count("Include ") == 1 and text.endswith(FREEBSD_SSHD_CONFIG)


def test_base_edit_needs_sshd_config(tmp_path: Path) -> None:
    with pytest.raises(overlay.OverlayError, match="FreeBSD-ssh"):
        overlay.apply_base_edits(tmp_path)


# --- sshd: the drop-in through a real OpenSSH -------------------------------------------------------

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _sshd_setup(tmp_path: Path, dropin: bytes, port: int = 22) -> Path:
    """A root sshd_config like FreeBSD's after the build edit: Include on top, then the stock file."""
    (tmp_path / "sshd_config.d").mkdir()
    (tmp_path / "sshd_config.d/fpvm.conf").write_bytes(dropin)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hostkey")], check=True
    )
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Include {tmp_path}/sshd_config.d/*.conf\n\n"
        f"HostKey {tmp_path}/hostkey\nPidFile {tmp_path}/sshd.pid\nListenAddress 127.0.0.1:{port}\n"
        f"AuthorizedKeysFile {tmp_path}/authorized_keys\nStrictModes no\nUsePAM no\n"
        + FREEBSD_SSHD_CONFIG.replace("/usr/libexec/sftp-server", "internal-sftp")
    )
    return config


def _sshd_effective(config: Path) -> dict[str, str]:
    result = subprocess.run([SSHD, "-T", "-f", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    values: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key, value)
    return values


def _without_penalties(dropin: bytes) -> bytes:
    kept = [line for line in dropin.decode().splitlines(True) if not line.startswith("PerSourcePenalties ")]
    assert len(kept) == len(dropin.decode().splitlines(True)) - 1
    return "".join(kept).encode()


def test_sshd_accepts_the_dropin_and_applies_it(tmp_path: Path) -> None:
    """Debian's OpenSSH 9.2 predates PerSourcePenalties (9.8): check everything else with sshd -t/-T."""
    dropin = overlay.sshd_dropin(RELEASE_15)
    assert b"PerSourcePenalties no\n" in dropin
    config = _sshd_setup(tmp_path, _without_penalties(dropin))
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    effective = _sshd_effective(config)
    assert effective["permitrootlogin"] == "without-password"  # sshd's spelling of prohibit-password
    assert effective["allowstreamlocalforwarding"] == "yes"
    assert effective["streamlocalbindunlink"] == "yes"
    assert effective["maxstartups"] == "200:30:200"
    assert effective["passwordauthentication"] == "no"
    assert effective["setenv"] == f"PATH={recipe.GUEST_PATH}"


def test_sshd_rejects_only_penalties_on_openssh_older_than_9_8(tmp_path: Path) -> None:
    config = _sshd_setup(tmp_path, overlay.sshd_dropin(RELEASE_15))
    version = subprocess.run([SSHD, "-V"], capture_output=True, text=True).stderr
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    if re.search(r"OpenSSH_(9\.[89]|[1-9]\d)", version):
        assert check.returncode == 0, check.stderr
    else:
        assert check.returncode != 0
        assert "PerSourcePenalties" in check.stderr
        assert check.stderr.count("Bad configuration option") == 1


def test_fourteen_dropin_has_no_penalties_and_passes_sshd(tmp_path: Path) -> None:
    dropin = overlay.sshd_dropin(RELEASE_14)
    assert b"PerSourcePenalties" not in dropin
    config = _sshd_setup(tmp_path, dropin)
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="a root login through a real sshd needs root")
def test_root_key_login_gets_linux_compat_first_in_path(tmp_path: Path) -> None:
    """A real sshd with the drop-in: root logs in by key (no password) and finds the launchers first."""
    port = _free_port()
    config = _sshd_setup(tmp_path, overlay.sshd_dropin(RELEASE_14), port)
    key = tmp_path / "client"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    try:
        for _ in range(50):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        ssh = [
            "ssh",
            "-F",
            "/dev/null",
            "-p",
            str(port),
            "-i",
            str(key),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            f"UserKnownHostsFile={tmp_path}/known_hosts",
            "root@127.0.0.1",
        ]
        result = subprocess.run([*ssh, 'echo "$PATH"'], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        # sshd's SetEnv gives the PATH; this host's root shell (bash, ~/.bashrc) may prepend to it.
        assert result.stdout.strip().endswith(recipe.GUEST_PATH), result.stdout
        password = subprocess.run(
            [*ssh[:-1], "-o", "PreferredAuthentications=password", "root@127.0.0.1", "true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert password.returncode != 0  # prohibit-password: keys only
    finally:
        server.terminate()
        server.wait(10)


# --- the real guest pieces (fpvm.guest.rcd, fpvm.guest.compat) -------------------------------------


@pytest.mark.parametrize("arch", ["amd64", "aarch64"])
def test_overlay_command_writes_exactly_the_tree(tmp_path: Path, arch: str) -> None:
    target = tmp_path / "tree"
    status, stdout, stderr = fpvm_main("image", "overlay", str(target), "--arch", arch)
    assert status == 0, stderr
    expected = {e.path for e in overlay.entries(arch)}
    assert sorted(stdout.splitlines()) == sorted(expected)
    written = {"/" + str(p.relative_to(target)) for p in target.rglob("*") if p.is_file() or p.is_symlink()}
    assert written == expected
    assert fpvm_main("image", "overlay", str(target), "--arch", arch)[1] == ""  # nothing changes


def test_overlay_command_arch_synonyms_and_errors(tmp_path: Path) -> None:
    assert fpvm_main("image", "overlay", str(tmp_path / "a"), "--arch", "arm64")[0] == 0
    assert (tmp_path / "a/boot/loader.conf.d/fpvm-console.conf").read_text().count('console="efi"') == 1
    status, _, stderr = fpvm_main("image", "overlay", str(tmp_path / "b"), "--arch", "mips")
    assert status == 2 and "unknown architecture 'mips'" in stderr


def test_real_guest_scripts_and_launchers(tmp_path: Path) -> None:
    from fpvm.guest import rcd

    root = tmp_path / "root"
    overlay.write(root, overlay.entries("amd64"))
    rc_dir = root / "usr/local/etc/rc.d"
    names = sorted(p.name for p in rc_dir.iterdir())
    assert names == sorted([*rcd.SCRIPTS, "fpvm_growfs", "fpvm_arc"])  # the default: zfs
    for script in [*rc_dir.iterdir(), *(root / "usr/local/libexec/fpvm/linux-compat").iterdir()]:
        assert os.access(script, os.X_OK), script
        result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"
    launchers = sorted(p.name for p in (root / "usr/local/libexec/fpvm/linux-compat").iterdir())
    assert {"chattr", "mount", "systemctl"} <= set(launchers)
    for service, values in rcd.RC_CONF.items():
        written = _assignments(root / "etc/rc.conf.d" / service)
        assert {k: v for k, v in values.items() if v is not None}.items() <= written.items()
    # rcorder: fpvm_growfs runs before the agent's script, which the agent's header provides.
    growfs = rcd.rcorder_header((rc_dir / "fpvm_growfs").read_text())
    assert (
        "fpvm" in growfs["BEFORE"] and "fpvm" in rcd.rcorder_header((rc_dir / "fpvm").read_text())["PROVIDE"]
    )
    assert "fpvm" in rcd.rcorder_header((rc_dir / "fpvm_arc").read_text())["BEFORE"]
