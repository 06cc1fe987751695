"""`fpvm machine init`: what it creates, the Ignition config it writes, and one clear error per bad input."""

from __future__ import annotations

import functools
import http.server
import json
import os
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from machine_support import make_disk

from fpvm import arch as archmod
from fpvm.ignition import dataurl
from fpvm.machine import ignition, qemu_host, state
from fpvm.machine.errors import MachineError
from fpvm_runner import fpvm_main, run_fpvm


def _machines() -> list[str]:
    root = state.machines_root()
    return sorted(os.listdir(root)) if root.exists() else []


def _decode(source: str) -> str:
    assert source.startswith("data:,")
    return urllib.parse.unquote(source[len("data:,") :])


def test_init_creates_the_machine(
    machine_env: Path, machine_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = machine_env / "src"
    src.mkdir()
    rc = fpvm_main(
        "machine",
        "init",
        "bsd",
        "--image",
        str(machine_disk),
        "--arch",
        "x86_64",
        "--cpus",
        "3",
        "--memory",
        "1024",
        "--disk-size",
        "2",
        "-v",
        f"{src}:/home/me/src",
        "-v",
        f"{machine_env}:/mnt/ro:ro",
    ).status
    assert rc == 0, capsys.readouterr().err
    paths = state.Paths.of("bsd")
    m = state.load("bsd")
    assert (m.arch, m.cpus, m.memory, m.disk_size, m.disk_format) == ("amd64", 3, 1024, 2, "raw")
    assert paths.disk.stat().st_size == 2 << 30
    assert [(v.source, v.target, v.readonly, v.tag) for v in m.volumes] == [
        (str(src), "/home/me/src", False, "fpvm0"),
        (str(machine_env), "/mnt/ro", True, "fpvm1"),
    ]
    assert 1024 <= m.ssh_port < 65536
    assert (paths.dir.stat().st_mode & 0o777) == 0o700
    pub = Path(f"{paths.key}.pub").read_text().strip()
    assert pub.startswith("ssh-ed25519 ")
    assert pub.split()[2:] == ["fpvm-bsd"]  # the machine's name, not init's temporary build folder

    config = json.loads(paths.config.read_bytes())
    assert config["ignition"]["version"] == "3.2.0"
    users = {u["name"]: u for u in config["passwd"]["users"]}
    assert users["core"]["sshAuthorizedKeys"] == [pub] and users["root"]["sshAuthorizedKeys"] == [pub]
    assert users["core"]["uid"] == m.uid == (os.getuid() or 1000)
    files = {f["path"]: f for f in config["storage"]["files"]}
    assert _decode(files["/etc/containers/podman-machine"]["contents"]["source"]) == "qemu\n"
    mounts = json.loads(_decode(files["/usr/local/etc/fpvm/mounts.json"]["contents"]["source"]))
    assert mounts == {
        "mounts": [
            {"tag": "fpvm0", "target": "/home/me/src", "readonly": False},
            {"tag": "fpvm1", "target": "/mnt/ro", "readonly": True},
        ]
    }
    links = {link["path"]: link["target"] for link in config["storage"]["links"]}
    assert links["/etc/localtime"] == "/usr/share/zoneinfo/Europe/Paris"
    assert _machines() == ["bsd"]  # no temporary directory left over


def test_generated_config_is_valid_ignition(machine_env: Path, machine_disk: Path) -> None:
    """The guest parses what we generate: check it with the project's Ignition parser (spec rules)."""
    from fpvm import ignition as spec

    assert (
        fpvm_main(
            "machine",
            "init",
            "v",
            "--image",
            str(machine_disk),
            "--arch",
            "amd64",
            "-v",
            f"{machine_env}:/srv/x",
        ).status
        == 0
    )
    parsed = spec.parse(state.Paths.of("v").config.read_bytes())
    paths = [f.path for f in parsed.storage.files]
    assert "/usr/local/etc/fpvm/mounts.json" in paths
    assert [u.name for u in parsed.passwd.users] == ["core", "root"]


def test_data_url_round_trips_like_podman() -> None:
    text = '[containers]\nnetns="bridge"\n100% sure?#\n'
    assert _decode(dataurl.encode(text)) == text
    assert dataurl.decode(dataurl.encode(text)) == text.encode()
    assert dataurl.encode("qemu\n") == "data:,qemu%0A"


@pytest.fixture
def http_image(tmp_path: Path) -> Iterator[str]:
    """A zstd-compressed raw image served over HTTP on 127.0.0.1 (no suffix in the URL)."""
    root = tmp_path / "www"
    root.mkdir()
    raw = make_disk(tmp_path / "served.raw", 2 << 20).read_bytes()
    (root / "latest").write_bytes(zstandard.ZstdCompressor().compress(raw))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/latest"
    server.shutdown()
    server.server_close()


def test_init_downloads_and_decompresses(machine_env: Path, http_image: str) -> None:
    assert fpvm_main("machine", "init", "dl", "--image", http_image, "--arch", "amd64",
                     "--disk-size", "1").status == 0  # fmt: skip
    disk = state.Paths.of("dl").disk
    with disk.open("rb") as fh:
        assert fh.read(520)[510:] == b"\x55\xaaEFI PART"
    assert disk.stat().st_size == 1 << 30


# -- bad input: one clear message each, nothing half-created ---------------------------------------


def _fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert fpvm_main(*argv).status == 1
    err = capsys.readouterr().err
    assert err.startswith("fpvm: error: ") and "Traceback" not in err
    assert _machines() == [], "init left something behind"
    return err


def test_not_a_disk_image(machine_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = machine_env / "freebsd.raw.xz"
    bogus.write_bytes(b"#!/bin/sh\necho this is a script, not an image\n" * 20)
    err = _fails(capsys, "machine", "init", "x", "--image", str(bogus), "--arch", "amd64")
    assert "is not a disk image" in err


def test_missing_volume_source(
    machine_env: Path, machine_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fails(
        capsys,
        "machine",
        "init",
        "x",
        "--image",
        str(machine_disk),
        "--arch",
        "amd64",
        "-v",
        "/nonexistent/src:/src",
    )
    assert "source folder /nonexistent/src does not exist" in err


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("/Users/me/My Project", "contains a space"),
        ("/Users/me/../src", "contains '.' or '..' components"),
        ("/Users/me/it's", "contains a single quote"),
        ('/srv/"x"', "contains a double quote"),
        ("/srv/a\\b", "contains " + repr("\\")),
    ],
)
def test_volume_target_the_guest_refuses(
    machine_env: Path, machine_disk: Path, capsys: pytest.CaptureFixture[str], target: str, why: str
) -> None:
    """The guest (fpvm.guest.mounts.check_target) rejects the whole config for one such target, so the VM
    would boot without keys: init refuses it up front with the guest's own reason."""
    spec = f"{machine_env}:{target}"
    err = _fails(capsys, "machine", "init", "x", "--image", str(machine_disk), "--arch", "amd64", "-v", spec)
    assert err.count("\n") == 1 and f"volume {spec!r}" in err, err
    assert why in err, err


def test_volume_target_is_normalised(machine_env: Path, machine_disk: Path) -> None:
    assert fpvm_main("machine", "init", "n", "--image", str(machine_disk), "--arch", "amd64",
                     "-v", f"{machine_env}://srv//x/:ro").status == 0  # fmt: skip
    assert [(v.target, v.readonly) for v in state.load("n").volumes] == [("/srv/x", True)]


def test_busy_port(machine_env: Path, machine_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        err = _fails(
            capsys,
            "machine",
            "init",
            "x",
            "--image",
            str(machine_disk),
            "--arch",
            "amd64",
            "--ssh-port",
            str(port),
        )
    assert f"127.0.0.1:{port} is in use" in err


def test_missing_qemu(
    machine_env: Path, machine_disk: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(machine_env))
    err = _fails(capsys, "machine", "init", "x", "--image", str(machine_disk), "--arch", "aarch64")
    assert "qemu-system-aarch64 is not installed (not found on PATH): install QEMU" in err


def test_missing_firmware(
    machine_env: Path, machine_disk: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qemu_host, "FIRMWARE_DIRS", (str(machine_env / "nowhere"),))
    monkeypatch.setenv("FPVM_QEMU", "/usr/bin/qemu-system-aarch64")
    err = _fails(capsys, "machine", "init", "x", "--image", str(machine_disk), "--arch", "aarch64")
    assert "no UEFI firmware for aarch64 found" in err and "qemu-efi-aarch64" in err


def test_name_exists(machine_env: Path, machine_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fpvm_main("machine", "init", "dup", "--image", str(machine_disk), "--arch", "amd64").status == 0
    before = state.Paths.of("dup").config.read_bytes()
    assert fpvm_main("machine", "init", "dup", "--image", str(machine_disk), "--arch", "amd64").status == 1
    assert "machine 'dup' exists" in capsys.readouterr().err
    assert _machines() == ["dup"]
    assert state.Paths.of("dup").config.read_bytes() == before


def test_bad_name(machine_env: Path, machine_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(capsys, "machine", "init", "../evil", "--image", str(machine_disk), "--arch", "amd64")
    assert "invalid machine name" in err


def test_failure_after_copy_removes_partial_dir(
    machine_env: Path, machine_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure late in init (no ssh-keygen, after the image was copied) removes the copied disk too."""
    monkeypatch.setenv("FPVM_QEMU", "/usr/bin/qemu-system-x86_64")
    monkeypatch.setenv("PATH", str(machine_env))  # no ssh-keygen (and no qemu-img: grow truncates)
    from fpvm.machine import lifecycle

    with pytest.raises(MachineError, match="ssh-keygen not found"):
        lifecycle.init("late", str(machine_disk), arch="amd64", disk_size=1)
    assert _machines() == []


def test_fpvm_command_registers_machine_groups(machine_env: Path, machine_disk: Path) -> None:
    """The installed `fpvm` command (all areas loaded) reaches this area's handlers."""
    init = run_fpvm("machine", "init", "c", "--image", str(machine_disk), "--arch", "amd64")
    assert init.returncode == 0, init.stderr
    listed = run_fpvm("machine", "list")
    assert listed.returncode == 0 and listed.stdout.split("\n")[1].split()[:3] == ["c", "amd64", "stopped"]
    doctor = run_fpvm("podman-machine", "doctor", "none")
    assert doctor.returncode == 1 and doctor.stderr.startswith("fpvm: error: no podman machine 'none'")


@pytest.mark.parametrize(
    ("link", "zone"),
    [
        ("/var/db/timezone/zoneinfo/America/New_York", "America/New_York"),  # macOS
        ("/usr/share/zoneinfo/Europe/Paris", "Europe/Paris"),  # most Linux
        ("../usr/share/zoneinfo/Asia/Tokyo", "Asia/Tokyo"),  # relative link
    ],
)
def test_host_timezone_from_the_localtime_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link: str, zone: str
) -> None:
    monkeypatch.delenv("TZ", raising=False)
    localtime = tmp_path / "localtime"
    localtime.symlink_to(link)
    assert ignition.host_timezone(str(localtime)) == zone


@pytest.mark.parametrize("arch", ["amd64", "aarch64"])
def test_start_dry_run_prints_the_argv_and_does_nothing_else(
    machine_env: Path,
    machine_disk: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    arch: str,
) -> None:
    """Issue 7: ``--dry-run`` prints the QEMU argv and nothing else happens (no process, no file)."""
    monkeypatch.setenv("FPVM_FIRMWARE", "/usr/share/AAVMF/AAVMF_CODE.fd")
    assert fpvm_main("machine", "init", "d", "--image", str(machine_disk), "--arch", arch).status == 0
    paths = state.Paths.of("d")
    before = sorted(p.relative_to(paths.dir) for p in paths.dir.rglob("*"))
    capsys.readouterr()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a dry run started a process: {args!r}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)
    assert fpvm_main("machine", "start", "d", "--dry-run", "--accel", "tcg").status == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert len(lines) == 1 and lines[0].split()[0].endswith(f"qemu-system-{archmod.qemu_name(arch)}")
    assert sorted(p.relative_to(paths.dir) for p in paths.dir.rglob("*")) == before
    assert not paths.run.exists() and not paths.qemu_log.exists()


def test_state_lives_in_application_support_on_macos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(state.sys, "platform", "darwin")
    assert state.machines_root() == tmp_path / "Library/Application Support/fpvm/machines"
    monkeypatch.setattr(state.sys, "platform", "linux")
    assert state.machines_root() == tmp_path / ".local/share/fpvm/machines"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "x"))
    assert state.machines_root() == tmp_path / "x/fpvm/machines"
