"""`fpvm podman-machine setup|teardown` and its qemu/virtiofsd helpers, driven with podman 5.8.2's argv.

The recorded command lines come from tests/fixtures/podman-5.8.2-qemu-capture/volumes.json (a real
podman 5.8.2 ``machine init -v SRC:/srv/share -v HOME:HOME:ro`` + ``start``). The installed launchers
run as podman runs them (argv, folder, environment). Real peers: QEMU 7.2 accepts the rewritten argv
(``-S``, QMP ``info qtree``); ``qemu-img`` makes the qcow2 copy of the FreeBSD disk; a recording
stand-in shows that other machines get their command line unchanged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fpvm.fwcfg.qmp import QmpClient
from fpvm.machine import podman_helper_main, podman_helpers
from fpvm_runner import fpvm_main
from fpvm_support import FIXTURES

CAPTURE = FIXTURES / "podman-5.8.2-qemu-capture"
RECORDER = Path(__file__).resolve().parent / "machine_recorder.py"
QEMU = podman_helpers.qemu_name()
FREEBSD_UFS = "516e7cb6-6ecf-11d6-8ff8-00022d09712b"
LINUX_FS = "0fc63daf-8483-4772-8e79-3d69d8477de4"  # what Fedora CoreOS's root partition is


def gpt_disk(path: Path, type_guid: str) -> Path:
    """A 1 MiB raw disk: protective MBR, GPT header at LBA 1, one partition entry of ``type_guid``."""
    data = bytearray(1 << 20)
    data[446 + 4] = 0xEE
    data[510:512] = b"\x55\xaa"
    data[512:520] = b"EFI PART"
    data[512 + 72 : 512 + 88] = struct.pack("<QII", 2, 128, 128)
    data[1024 : 1024 + 16] = uuid.UUID(type_guid).bytes_le
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """A user's HOME/XDG folders under a short /tmp dir, no system containers.conf, a clean environment."""
    base = Path(tempfile.mkdtemp(prefix="fpvm5", dir="/tmp"))
    paths = {"base": base, "home": base / "h", "run": base / "r", "etc": base / "etc"}
    for p in paths.values():
        p.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(paths["home"]))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(paths["home"] / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(paths["home"] / ".local/share"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(paths["run"]))
    for var in ("CONTAINERS_CONF", "CONTAINERS_HELPER_BINARY_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(podman_helpers, "USR_CONF", base / "usr-containers.conf")
    monkeypatch.setattr(podman_helpers, "ETC_DIR", paths["etc"])
    yield paths
    shutil.rmtree(base, ignore_errors=True)


def user_conf(env: dict[str, Path], text: str) -> None:
    conf = env["home"] / ".config/containers/containers.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(text)


def standins(folder: Path) -> Path:
    """``qemu-system-*`` and ``virtiofsd`` that record their argv/env/cwd into ``folder/record.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (QEMU, "virtiofsd"):
        (folder / name).write_text(f"#!{sys.executable}\n" + RECORDER.read_text())
        (folder / name).chmod(0o755)
    return folder


def recorded(folder: Path) -> dict[str, Any]:
    data = json.loads((folder / "record.json").read_text())
    return {
        "argv": [bytes.fromhex(a) for a in data["argv"]],
        "env": {bytes.fromhex(k): bytes.fromhex(v) for k, v in data["env"].items()},
        "cwd": data["cwd"],
    }


def capture(env: dict[str, Path]) -> dict[str, Any]:
    text = (CAPTURE / "volumes.json").read_text().replace("$XDG_RUNTIME_DIR", str(env["run"]))
    data: dict[str, Any] = json.loads(text)
    (env["run"] / "podman").mkdir(exist_ok=True)
    return data


def machine_files(env: dict[str, Path], disk: Path, sources: list[Path], starting: bool = True) -> Path:
    """podman 5.8.2's files for machine ``bsd``: bsd.ign and bsd.json (mounts of the capture's init)."""
    conf = env["home"] / ".config/containers/podman/machine/qemu"
    conf.mkdir(parents=True, exist_ok=True)
    shutil.copy(CAPTURE / "machine.ign", conf / "bsd.ign")
    data = json.loads((FIXTURES / "podman-ignition/v5.8.2-qemu-machine.json").read_text())
    data["Name"] = "bsd"
    data["Starting"] = starting
    data["ImagePath"]["Path"] = str(disk)
    targets = [("/srv/share", False), ("/home/user", True)]
    data["Mounts"] = [
        {
            "OriginalInput": f"{src}:{dst}" + (":ro" if ro else ""),
            "ReadOnly": ro,
            "Source": str(src),
            "Tag": tag,
            "Target": dst,
            "Type": "virtiofs",
            "VSockNumber": None,
        }
        for src, (dst, ro), tag in zip(sources, targets, recorded_tags(), strict=True)
    ]
    (conf / "bsd.json").write_text(json.dumps(data, indent=1))
    return conf


def podman_tag(target: str) -> str:
    import hashlib

    return hashlib.sha256(target.encode()).hexdigest()[:36]


def qemu_argv(data: dict[str, Any], conf: Path, disk: Path) -> list[str]:
    """The recorded argv with this machine's .ign and disk; -accel/-cpu for a host without KVM."""
    argv = list(data["qemu_argv"])
    argv[argv.index("kvm")] = "tcg"  # no /dev/kvm here
    argv[argv.index("host")] = "max"  # -cpu host needs KVM
    argv = [
        a.replace("/home/user/.config/containers/podman/machine/qemu", str(conf)).replace(
            "/home/user/.local/share/containers/podman/machine/qemu/bsd-amd64.qcow2", str(disk)
        )
        for a in argv
    ]
    return argv


def recorded_tags() -> list[str]:
    data = json.loads((CAPTURE / "volumes.json").read_text())
    return re.findall(r"tag=([0-9a-f]+)", " ".join(data["qemu_argv"]))


def test_the_recorded_tags_are_podmans_sha256_of_the_target() -> None:
    tags = recorded_tags()
    # the second target was the capturing user's real home (neutralised to /home/user in the file)
    assert len(tags) == 2 and tags[0] == podman_tag("/srv/share") and len(tags[1]) == 36


# -- setup / teardown -----------------------------------------------------------------------------
def test_setup_puts_the_helpers_first_and_teardown_undoes_exactly_that(
    env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    user_conf(env, '[engine]\nhelper_binaries_dir = ["/opt/podman/bin"]\n')
    dropin_dir = env["home"] / ".config/containers/containers.conf.d"
    dropin_dir.mkdir(parents=True)
    (dropin_dir / "10-mine.conf").write_text('[engine]\nhelper_binaries_dir = ["/opt/x", {append=true}]\n')
    (env["home"] / ".local/share").mkdir(parents=True)  # a user's home has it
    before = sorted(p for p in env["base"].rglob("*"))
    assert not podman_helpers.status().ok
    assert fpvm_main("podman-machine", "setup").status == 0
    folder = podman_helpers.helper_dir()
    dropin = dropin_dir / "99-fpvm-helpers.conf"
    import tomllib

    dirs = tomllib.loads(dropin.read_text())["engine"]["helper_binaries_dir"]
    assert dirs == [str(folder), "/opt/podman/bin", "/opt/x"]
    assert podman_helpers.helper_dirs_in_force()[0] == dirs  # what podman computes from all files
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["fpvm_podman_helper.py", "helpers.json", QEMU, "virtiofsd"]
    )
    for name in (QEMU, "virtiofsd"):
        compile((folder / name).read_text(), name, "exec")  # a valid python script
        assert os.access(folder / name, os.X_OK)
    assert json.loads((folder / "helpers.json").read_text())["search_dirs"] == ["/opt/podman/bin", "/opt/x"]
    st = podman_helpers.status()
    assert st.ok, st.detail
    # a second setup changes nothing; teardown leaves the tree as it was
    snap = {p: p.read_bytes() for p in env["base"].rglob("*") if p.is_file()}
    assert fpvm_main("podman-machine", "setup").status == 0
    assert {p: p.read_bytes() for p in env["base"].rglob("*") if p.is_file()} == snap
    assert fpvm_main("podman-machine", "teardown").status == 0
    assert sorted(p for p in env["base"].rglob("*")) == before
    assert "Removed:" in capsys.readouterr().out


def test_status_sees_a_later_file_that_hides_the_helpers(env: dict[str, Path]) -> None:
    assert fpvm_main("podman-machine", "setup").status == 0
    assert podman_helpers.status().ok
    (env["home"] / ".config/containers/containers.conf.d/zz-later.conf").write_text(
        '[engine]\nhelper_binaries_dir = ["/usr/libexec/podman"]\n'
    )
    st = podman_helpers.status()
    assert not st.ok and "zz-later.conf" in st.detail and st.fix == "run: fpvm podman-machine setup"


# -- podman 5.8.2's argv for a FreeBSD machine: real QEMU ----------------------------------------------
def wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    """As podman does: poll until the socket path exists (fail if the helper died)."""
    end = time.monotonic() + 30
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_freebsd_machine_gets_9p_devices_that_real_qemu_accepts(env: dict[str, Path], fmt: str) -> None:
    disk = gpt_disk(env["base"] / "bsd.raw", FREEBSD_UFS)
    if fmt == "qcow2":
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(disk), str(disk) + ".qcow2"], check=True)
        disk = Path(str(disk) + ".qcow2")
    share, home = env["base"] / "share", env["base"] / "user,home"  # a comma, escaped as ,,
    share.mkdir()
    home.mkdir()
    conf = machine_files(env, disk, [share, home])
    assert fpvm_main("podman-machine", "setup").status == 0
    folder = podman_helpers.helper_dir()
    data = capture(env)
    gvproxy = socket.socket(socket.AF_UNIX)  # QEMU's -netdev stream connects to gvproxy's socket
    gvproxy.bind(str(env["run"] / "podman/bsd-gvproxy.sock"))
    gvproxy.listen()
    helpers: list[subprocess.Popen[bytes]] = []
    qemu = None
    try:
        for spawn, source in zip(data["virtiofsd"], [share, home], strict=True):
            proc = subprocess.Popen(
                [str(folder / "virtiofsd"), *spawn["argv"]],
                cwd=source,
                env={**os.environ, **spawn["env"]},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            helpers.append(proc)
            sock = Path(spawn["argv"][spawn["argv"].index("--socket-path") + 1])
            wait_for(sock, proc)
            assert json.loads(Path(f"{sock}.fpvm.json").read_text())["shared_dir"] == str(source)
        argv = qemu_argv(data, conf, disk)
        qemu = subprocess.Popen(
            [str(folder / QEMU), *argv, "-S"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        qmp = env["run"] / "podman/qmp_bsd.sock"
        end = time.monotonic() + 30
        while not qmp.exists():
            if qemu.poll() is not None:
                pytest.fail("QEMU refused the argv:\n" + (qemu.stdout.read().decode() if qemu.stdout else ""))
            assert time.monotonic() < end
            time.sleep(0.05)
        time.sleep(0.2)
        with QmpClient(str(qmp)) as q:
            qtree = q.hmp("info qtree")
            assert "vhost-user-fs" not in qtree
            assert len(re.findall(r"dev: virtio-9p-pci", qtree)) == 2
            tags = re.findall(r'mount_tag = "([^"]+)"', qtree)
            assert sorted(tags) == sorted(t[:31] for t in recorded_tags())
            # the helper exec'd QEMU: the started process is QEMU, with the rewritten command line
            cmdline = Path(f"/proc/{qemu.pid}/cmdline").read_bytes().split(b"\0")[:-1]
            assert os.path.basename(cmdline[0]) == QEMU.encode()
            text = [a.decode() for a in cmdline]
            fsdevs = [text[i + 1] for i, a in enumerate(text) if a == "-fsdev"]
            assert fsdevs == [
                f"local,id=fpvmfs0,path={share},security_model=none",
                f"local,id=fpvmfs1,path={str(home).replace(',', ',,')},security_model=none,readonly=on",
            ]
            q.execute("quit")
        qemu.wait(30)
        # each stand-in virtiofsd lived as long as QEMU held its socket, then cleaned up
        for proc, spawn in zip(helpers, data["virtiofsd"], strict=True):
            assert proc.wait(30) == 0
            sock = spawn["argv"][spawn["argv"].index("--socket-path") + 1]
            assert not Path(sock).exists() and not Path(f"{sock}.fpvm.json").exists()
        log = (folder / "helpers.log").read_text()
        assert "stand-in for" in log and "offered as virtio-9p" in log
    finally:
        for p in [*helpers, *([qemu] if qemu else [])]:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        gvproxy.close()


# -- every other machine: the real binaries, argv byte for byte -------------------------------------
ODD = [
    "-name",
    "with space,,comma",
    "-device",
    "x,tag=ü\u00e9",
    os.fsdecode(b"\xff\xfe-not-utf8"),
    "",
    "a\nb",
]


def test_other_machines_get_the_real_binaries_with_argv_env_and_folder_unchanged(
    env: dict[str, Path],
) -> None:
    real = standins(env["base"] / "real")
    user_conf(env, f'[engine]\nhelper_binaries_dir = ["{real}"]\n')
    assert fpvm_main("podman-machine", "setup").status == 0
    folder = podman_helpers.helper_dir()
    linux = gpt_disk(env["base"] / "fcos.raw", LINUX_FS)
    share = env["base"] / "share"
    share.mkdir()
    conf = machine_files(env, linux, [share, env["home"]])
    data = capture(env)
    # no LANG/LC_*: python3 would coerce LC_CTYPE for itself; QEMU must not see that
    clean = {
        "PATH": os.environ["PATH"],
        "HOME": str(env["home"]),
        "XDG_CONFIG_HOME": str(env["home"] / ".config"),
    }

    argv = qemu_argv(data, conf, linux) + ODD
    done = subprocess.run([str(folder / QEMU), *argv], env=clean, cwd=env["base"], check=False)
    assert done.returncode == 0
    rec = recorded(real)
    assert rec["argv"] == [os.fsencode(a) for a in argv]
    assert rec["env"] == {k.encode(): v.encode() for k, v in clean.items()}
    assert rec["cwd"] == str(env["base"])

    # virtiofsd: a starting machine whose disk is not FreeBSD's -> the real one, in podman's folder
    spawn = data["virtiofsd"][0]
    venv = {**clean, **spawn["env"]}
    done = subprocess.run([str(folder / "virtiofsd"), *spawn["argv"]], env=venv, cwd=share, check=False)
    assert done.returncode == 0
    rec = recorded(real)
    assert rec["argv"] == [os.fsencode(a) for a in spawn["argv"]]
    assert rec["env"] == {k.encode(): v.encode() for k, v in venv.items()}
    assert rec["cwd"] == str(share)


def test_freebsd_disk_but_no_starting_machine_sharing_the_folder_runs_the_real_virtiofsd(
    env: dict[str, Path],
) -> None:
    real = standins(env["base"] / "real")
    user_conf(env, f'[engine]\nhelper_binaries_dir = ["{real}"]\n')
    assert fpvm_main("podman-machine", "setup").status == 0
    share = env["base"] / "share"
    share.mkdir()
    machine_files(env, gpt_disk(env["base"] / "bsd.raw", FREEBSD_UFS), [share, env["home"]], starting=False)
    spawn = capture(env)["virtiofsd"][0]
    folder = podman_helpers.helper_dir()
    done = subprocess.run([str(folder / "virtiofsd"), *spawn["argv"]], cwd=share, check=False)
    assert done.returncode == 0
    assert recorded(real)["argv"] == [os.fsencode(a) for a in spawn["argv"]]


def test_qemu_helper_fails_clearly_when_a_folder_is_unknown(env: dict[str, Path]) -> None:
    """A FreeBSD disk with a virtio-fs device that neither the stand-in nor the machine file names."""
    disk = gpt_disk(env["base"] / "bsd.raw", FREEBSD_UFS)
    argv = ["qemu", "-drive", f"if=virtio,file={disk}", "-chardev", "socket,id=c0,path=/nonexistent/s"]
    argv += ["-device", "vhost-user-fs-pci,queue-size=1024,chardev=c0,tag=abc"]
    with pytest.raises(
        podman_helper_main.RewriteError, match="cannot find the host folder of virtio-fs tag 'abc'"
    ):
        podman_helper_main.rewrite_qemu(argv)
    # and a Linux disk is never rewritten
    linux = gpt_disk(env["base"] / "l.raw", LINUX_FS)
    assert podman_helper_main.rewrite_qemu(["qemu", "-drive", f"if=virtio,file={linux}", *argv[3:]]) is None


# -- doctor ---------------------------------------------------------------------------------------------
def test_doctor_says_whether_the_helpers_are_in_place(
    env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    share = env["base"] / "share"
    share.mkdir()
    machine_files(env, gpt_disk(env["base"] / "bsd.raw", FREEBSD_UFS), [share, env["home"]], starting=False)
    assert fpvm_main("podman-machine", "doctor", "bsd").status == 1
    out = capsys.readouterr().out
    problem = "[PROBLEM] helpers: 2 folder(s) use virtio-fs, which FreeBSD lacks, and fpvm's helpers are not"
    assert problem + " installed" in out
    assert "what to do: run: fpvm podman-machine setup, then restart the machine" in out
    assert fpvm_main("podman-machine", "setup").status == 0
    capsys.readouterr()
    assert fpvm_main("podman-machine", "doctor", "bsd").status == 1  # the VM is not running
    out = capsys.readouterr().out
    assert "[ok] helpers: 2 folder(s) are offered as 9p: fpvm's helpers in" in out


def test_no_real_virtiofsd_for_another_machine_fails_the_start_with_a_message(
    env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """podman waits for the socket forever, so it is served; the qemu helper then refuses, saying why."""
    linux = gpt_disk(env["base"] / "fcos.raw", LINUX_FS)
    share = env["base"] / "share"
    share.mkdir()
    sock = env["run"] / "virtiofschar0"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import podman_helper_main as h; "
        "sys.exit(h.serve_stand_in(*sys.argv[2:5], 60.0, 'no real virtiofsd: install it'))"
    )
    here = str(Path(podman_helper_main.__file__).parent)
    proc = subprocess.Popen([sys.executable, "-c", code, here, str(sock), str(share), str(env["base"])])
    try:
        wait_for(sock, proc)
        argv = [QEMU, "-drive", f"if=virtio,file={linux}", "-chardev", f"socket,id=c0,path={sock}"]
        argv += ["-device", "vhost-user-fs-pci,queue-size=1024,chardev=c0,tag=t"]
        assert podman_helper_main.qemu_main(QEMU, argv, str(env["base"])) == 1
        assert "no real virtiofsd: install it" in capsys.readouterr().err
        with socket.socket(socket.AF_UNIX) as c:  # QEMU's connection and its end: the stand-in exits
            c.connect(str(sock))
        assert proc.wait(30) == 0
        assert not sock.exists() and not Path(f"{sock}.fpvm.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
