"""Image overlay + guest agent: the files ``fpvm image overlay`` adds to FreeBSD and the files the guest
writes from podman's Ignition config must work together on one root.

The overlay (real ``fpvm image overlay DIR --arch A``, amd64 and aarch64) plus FreeBSD's base accounts
is the staged root; podman's own configs (v5.8.2 and the 4.3.1 capture) are provisioned on top with the
real ``fpvm guest provision``. Real peers: Debian's visudo (sudo 1.9.13) on the image's and the guest's
sudoers.d together, OpenSSH 9.2 ``sshd -t``/``-T`` on the image's drop-in, POSIX sh reading rc.conf.d
files the way rc.subr's load_rc_config does (it sources them), and sh running the overlay's
linux-compat launchers.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_support import (
    SRC,
    add_freebsd_base,
    master_passwd,
    records,
    resolve_in_root,
    shell_value,
    stop,
)

from fpvm.guest import apisocket, compat, rcd
from fpvm.image import recipe
from fpvm.machine import connection
from fpvm_runner import run_fpvm
from fpvm_support import PODMAN_CAPTURE, PODMAN_IGNITION

ARCHES = ("amd64", "aarch64")
CONFIGS = {
    "v5.8.2": PODMAN_IGNITION / "v5.8.2-qemu.ign",
    "4.3.1-capture": PODMAN_CAPTURE / "machine.ign",
}
SUDOERS_D = "usr/local/etc/sudoers.d"
# sshd options the image writes that Debian's OpenSSH 9.2 predates (option -> OpenSSH release).
NEWER_SSHD_OPTIONS = {"persourcepenalties": "9.8"}


@pytest.fixture(scope="module")
def overlays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real overlay per architecture."""
    out = {}
    for arch in ARCHES:
        tree = tmp_path_factory.mktemp(f"overlay-{arch}")
        result = run_fpvm("image", "overlay", str(tree), "--arch", arch, text=False)
        assert result.returncode == 0, result.stderr
        out[arch] = tree
    return out


def stage(overlay: Path, root: Path) -> Path:
    """The overlay as the base of a root, plus what FreeBSD's base brings (accounts, /root, /home)."""
    shutil.copytree(overlay, root, symlinks=True)
    return add_freebsd_base(root)


class Provisioned:
    def __init__(
        self, arch: str, config: str, root: Path, result: subprocess.CompletedProcess[bytes]
    ) -> None:
        self.arch, self.config, self.root, self.result = arch, config, root, result


@pytest.fixture(
    scope="module", params=[(a, c) for a in ARCHES for c in CONFIGS], ids=lambda p: f"{p[0]}-{p[1]}"
)
def provisioned(
    request: pytest.FixtureRequest, overlays: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Provisioned]:
    arch, name = request.param
    base = tmp_path_factory.mktemp(f"staged-{arch}-{name}")
    root = stage(overlays[arch], base / "root")
    result = run_fpvm("guest", "provision", "--root", str(root), "--config", str(CONFIGS[name]),
                      "--record", str(base / "cmds.jsonl"), "--no-ready", text=False)  # fmt: skip
    yield Provisioned(arch, name, root, result)


def test_podman_config_provisions_on_the_image(provisioned: Provisioned) -> None:
    r = provisioned.result
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert re.search(rb"\b0 failed\b", r.stdout), r.stdout
    users = master_passwd(provisioned.root)
    assert users["root"][2] == "0" and "core" in users


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every node under root (type, mode, owner, contents or target, mtime), the agent's own log aside."""
    out: dict[str, tuple[object, ...]] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel.startswith(("var/db/fpvm", "var/log/fpvm.log")):
            continue
        st = p.lstat()
        if p.is_symlink():
            out[rel] = ("link", st.st_uid, st.st_gid, os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir", st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
        else:
            out[rel] = ("file", st.st_mode, st.st_uid, st.st_gid, p.read_bytes(), st.st_mtime_ns)
    return out


def test_second_provision_changes_nothing(provisioned: Provisioned, tmp_path: Path) -> None:
    """Provisioning again on the image (a reboot with --firstboot, or a retried first boot) is a no-op."""
    before = snapshot(provisioned.root)
    rec = tmp_path / "again.jsonl"
    config = str(CONFIGS[provisioned.config])
    again = run_fpvm("guest", "provision", "--root", str(provisioned.root), "--config", config,
                     "--record", str(rec), "--no-ready", text=False)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert re.search(rb"\b0 changed\b", again.stdout), again.stdout
    assert records(rec) == []
    assert snapshot(provisioned.root) == before


def test_sudoers_of_image_and_guest_pass_visudo(provisioned: Provisioned, tmp_path: Path) -> None:
    """FreeBSD's sudoers ends with ``@includedir /usr/local/etc/sudoers.d``; both areas write there."""
    d = provisioned.root / SUDOERS_D
    names = sorted(p.name for p in d.iterdir())
    assert "fpvm" in names and len(names) >= 2, names  # the image's and the guest's
    for p in d.iterdir():
        # sudo skips names with '.' or ending in '~' in an includedir (sudoers(5)); 0440 as visudo makes.
        assert "." not in p.name and not p.name.endswith("~"), p
        assert stat.S_IMODE(p.stat().st_mode) == 0o440, p
    main = tmp_path / "sudoers"
    main.write_text(f"root ALL=(ALL:ALL) ALL\n@includedir {d}\n")
    result = subprocess.run(["visudo", "-c", "-f", str(main)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in names:
        assert f"{d / name}: parsed OK" in result.stdout, result.stdout  # every file was read


def test_visudo_check_reads_the_includedir(tmp_path: Path) -> None:
    """Guard for the test above: a broken file in the included directory must make visudo fail."""
    d = tmp_path / "sudoers.d"
    d.mkdir()
    (d / "broken").write_text("core ALL=(ALL NOPASSWD: ALL\n")
    main = tmp_path / "sudoers"
    main.write_text(f"root ALL=(ALL:ALL) ALL\n@includedir {d}\n")
    result = subprocess.run(["visudo", "-c", "-f", str(main)], capture_output=True, text=True, check=False)
    assert result.returncode != 0


def test_podman_service_socket_agrees(provisioned: Provisioned) -> None:
    """The image configures the API service, the guest enables it: the file keeps both, one socket."""
    conf = provisioned.root / "etc/rc.conf.d/podman_service"
    assert shell_value(conf, "podman_service_enable") == "YES"
    sock = shell_value(conf, "podman_service_api_socket")
    assert sock == apisocket.API_SOCKET == connection.API_SOCKET
    assert f"unix://{sock}" in shell_value(conf, "podman_service_flags").split()
    assert shell_value(conf, "podman_service_api_rundir") == os.path.dirname(sock)


def test_api_socket_paths_reach_the_service(provisioned: Provisioned) -> None:
    """Every path podman's host side uses for the API resolves, in the guest, to the service's socket."""
    root = provisioned.root
    assert (root / "run").is_symlink() and os.readlink(root / "run") == "var/run"
    assert resolve_in_root(root, apisocket.RUN_SOCKET) == apisocket.API_SOCKET
    uid = int(master_passwd(root)["core"][2])
    for prefix in ("/run", "/var/run"):
        assert resolve_in_root(root, f"{prefix}/user/{uid}/podman/podman.sock") == apisocket.API_SOCKET
    if provisioned.config == "4.3.1-capture":
        args = (PODMAN_CAPTURE / "gvproxy-args.txt").read_text()
        dest = re.search(r"'-forward-dest', '([^']+)'", args)
        assert dest is not None
        assert resolve_in_root(root, dest.group(1)) == apisocket.API_SOCKET


@pytest.mark.parametrize("arch", ARCHES)
def test_overlay_rc_scripts_are_the_guests(overlays: dict[str, Path], arch: str) -> None:
    for name in rcd.SCRIPTS:
        path = overlays[arch] / rcd.RC_D.lstrip("/") / name
        assert path.read_bytes() == rcd.script_text(name)
        assert path.stat().st_mode & 0o111 == 0o111
    for service, values in rcd.RC_CONF.items():
        for var, value in values.items():
            assert shell_value(overlays[arch] / "etc/rc.conf.d" / service, var) == value


@pytest.mark.parametrize("arch", ARCHES)
def test_overlay_run_link(overlays: dict[str, Path], arch: str) -> None:
    run = overlays[arch] / "run"
    assert run.is_symlink() and os.readlink(run) == "var/run"


@pytest.mark.parametrize("arch", ARCHES)
def test_launchers_call_the_images_fpvm(overlays: dict[str, Path], arch: str) -> None:
    tree = overlays[arch]
    launcher_dir = tree / compat.LAUNCHER_DIR.lstrip("/")
    assert compat.LAUNCHER_DIR == recipe.COMPAT_DIR
    assert sorted(p.name for p in launcher_dir.iterdir()) == sorted(compat.launchers())
    for launcher in launcher_dir.iterdir():
        m = re.search(r'^exec (\S+) guest shim (\S+) "\$@"$', launcher.read_text(), re.M)
        assert m is not None, launcher.read_text()
        exe, name = m.groups()
        assert name == launcher.name and name in compat.COMMANDS
        fpvm_in_image = tree / exe.lstrip("/")
        assert fpvm_in_image.is_file() and os.access(fpvm_in_image, os.X_OK), exe
        # The command runs on the recipe's python3, a package the recipe installs.
        assert fpvm_in_image.read_text().splitlines()[0] == f"#!{recipe.PYTHON}"
        assert os.path.basename(recipe.PYTHON) in recipe.PORTS_PACKAGES


@pytest.mark.parametrize("arch", ARCHES)
def test_mount_launcher_runs_through_the_images_fpvm(
    overlays: dict[str, Path], arch: str, tmp_path: Path
) -> None:
    """podman 4.x's ssh mount line through the overlay's launcher and the overlay's fpvm entry point.

    Only the interpreter and the absolute paths are mapped to this host: the launcher's fpvm path
    becomes a wrapper that runs the overlay's ``/usr/local/bin/fpvm`` with this python, recording.
    """
    tree = overlays[arch]
    root = add_freebsd_base(tmp_path / "root")
    (root / "Users/me/src").mkdir(parents=True)  # podman runs `mkdir -p` before `mount`
    rec = tmp_path / "cmds.jsonl"
    entry = tree / compat.FPVM.lstrip("/")
    wrapper = tmp_path / "fpvm"
    wrapper.write_text(
        "#!/bin/sh\n"
        '[ "$1 $2" = "guest shim" ] || exit 99\n'
        "shift 2\n"
        f'PYTHONPATH="{SRC}" exec "{sys.executable}" "{entry}" guest shim '
        f'--record "{rec}" --root "{root}" "$@"\n'
    )
    wrapper.chmod(0o755)
    launcher = tree / compat.LAUNCHER_DIR.lstrip("/") / "mount"
    text = launcher.read_text().replace(compat.FPVM, str(wrapper))
    result = subprocess.run(
        [
            "sh",
            "-c",
            text,
            "mount",
            "-t",
            "9p",
            "-o",
            "trans=virtio",
            "vol0",
            "/Users/me/src",
            "-o",
            "version=9p2000.L,msize=131072",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert records(rec) == [
        ["/sbin/kldload", "-n", "virtio_p9fs"],
        ["/sbin/mount", "-t", "p9fs", "vol0", "/Users/me/src"],
    ]


def sshd_config(overlay: Path, tmp_path: Path, extra: str = "") -> Path:
    """sshd_config as the image has it: the Include line first (the build adds it), then FreeBSD's stock
    file, whose only active line is the sftp Subsystem (freebsd-src crypto/openssh/sshd_config), and a
    PermitRootLogin a user may have uncommented, which the drop-in must beat (sshd keeps the first
    PermitRootLogin it reads). Options newer than Debian's OpenSSH 9.2 are left out of the drop-in.
    """
    dropin = overlay / "etc/ssh/sshd_config.d/fpvm.conf"
    kept: list[str] = []
    dropped: list[str] = []
    for line in dropin.read_text().splitlines():
        word = line.split(None, 1)[0].lower() if line.strip() and not line.startswith("#") else ""
        (dropped if word in NEWER_SSHD_OPTIONS else kept).append(line)
    assert [ln.split()[0] for ln in dropped] == ["PerSourcePenalties"]  # FreeBSD 15's OpenSSH knows it
    d = tmp_path / "sshd_config.d"
    d.mkdir()
    (d / "fpvm.conf").write_text("\n".join(kept) + "\n")
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    main = tmp_path / "sshd_config"
    main.write_text(
        f"Include {d}/*.conf\nHostKey {key}\nSubsystem sftp /usr/libexec/sftp-server\nPermitRootLogin yes\n"
        + extra
    )
    return main


def sshd_binary() -> str:
    return shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.mark.parametrize("arch", ARCHES)
def test_sshd_accepts_the_dropin(overlays: dict[str, Path], arch: str, tmp_path: Path) -> None:
    """Real sshd must accept the image's drop-in, and its values must be the effective ones."""
    main = sshd_config(overlays[arch], tmp_path)
    test = subprocess.run([sshd_binary(), "-t", "-f", str(main)], capture_output=True, text=True, check=False)
    assert test.returncode == 0, test.stderr
    dump = subprocess.run(
        [sshd_binary(), "-T", "-f", str(main)], capture_output=True, text=True, check=True
    ).stdout
    effective = dict(line.split(" ", 1) for line in dump.splitlines() if " " in line)
    assert effective["permitrootlogin"] == "without-password"  # sshd's name for prohibit-password
    assert effective["maxstartups"].startswith("200:")
    assert effective["maxsessions"] == "100"
    assert effective["allowstreamlocalforwarding"] == "yes"
    assert effective["setenv"] == f"PATH={recipe.GUEST_PATH}"
    assert effective["setenv"].split("=", 1)[1].split(":")[0] == compat.LAUNCHER_DIR


@pytest.mark.slow
def test_ssh_commands_find_the_launchers_first(overlays: dict[str, Path], tmp_path: Path) -> None:
    """A real ssh session under the drop-in: ``mount`` resolves to the linux-compat launcher directory.

    The login shell here is the host's (it may prepend its own directories); what must hold is that
    the launcher directory precedes every system directory, as on the guest.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    user_key = tmp_path / "user_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(user_key)], check=True)
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(Path(f"{user_key}.pub").read_text())
    authorized.chmod(0o600)
    # Test-only lines: loopback, a free port, keys outside a home (StrictModes would refuse /tmp).
    main = sshd_config(
        overlays["amd64"],
        tmp_path,
        f"ListenAddress 127.0.0.1\nPort {port}\nAuthorizedKeysFile {authorized}\n"
        "StrictModes no\nPidFile none\n",
    )
    log = tmp_path / "sshd.log"
    with log.open("wb") as fh:
        sshd = subprocess.Popen(
            [sshd_binary(), "-D", "-e", "-f", str(main)], stdout=fh, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if sshd.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"sshd did not listen: {log.read_text()}") from None
                time.sleep(0.05)
        session = subprocess.run(
            ["ssh", "-F", "/dev/null", "-i", str(user_key), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
             "-p", str(port), f"{getpass.getuser()}@127.0.0.1", 'printf "%s" "$PATH"'],
            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        stop(sshd)
    assert session.returncode == 0, session.stderr + log.read_text()
    path = session.stdout.split(":")
    assert compat.LAUNCHER_DIR in path, path
    first_system = min(path.index(d) for d in ("/sbin", "/bin", "/usr/sbin", "/usr/bin") if d in path)
    assert path.index(compat.LAUNCHER_DIR) < first_system, path
