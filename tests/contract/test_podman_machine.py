"""The real podman 4.3.1 client against a simulated VM whose guest is fpvm's agent and shims.

``podman machine init`` writes the Ignition config and machine JSON; ``start`` runs our stand-in
qemu (which boots = runs ``fpvm guest provision`` on a staged root with the fw_cfg file from its own
command line, then says Ready), reaches the "guest" sshd through our stand-in gvproxy with the key the
agent installed, and runs its mount commands through the linux-compat shims in record mode; ``stop``
powers the VM off over QMP. Expected commands: p9fs(4) ``mount -t p9fs [-o ro] <tag> <dir>`` after
kldload(8) ``kldload -n virtio_p9fs``.

Needs root (to create the podman user and run sshd), podman 4.3.1, OpenSSH; CI installs them
(.ci/debian-packages).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract_harness import MACHINE, Harness

pytestmark = pytest.mark.slow

RW_TARGET = "/Users/dev/src"  # not under /home or /mnt: podman wraps mkdir in chattr -i/+i
RO_TARGET = "/mnt/data"  # under /mnt: a plain mkdir, and `:ro` adds `-o ro`


def _require_peers() -> None:
    if os.geteuid() != 0:
        pytest.fail("the podman contract test runs as root (it creates a user and runs sshd)")
    for tool in ("podman", "runuser", "useradd", "ssh-keygen", "qemu-img"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (.ci/install-debian-packages installs it)")
    if not Path("/usr/sbin/sshd").exists():
        pytest.fail("/usr/sbin/sshd is missing (openssh-server)")


def read_jsonl(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def machine() -> Iterator[Harness]:
    """A machine that went through init, start and stop, with everything recorded."""
    _require_peers()
    h = Harness.create()
    try:
        h.start_sshd()
        rw, ro = h.base / "share-rw", h.base / "share-ro"
        init = h.podman(
            "machine", "init", "--image-path", str(h.base / "fake.img"), "--timezone", "UTC",
            "--username", h.user.pw_name, "--disk-size", "1",
            "-v", f"{rw}:{RW_TARGET}", "-v", f"{ro}:{RO_TARGET}:ro", MACHINE,
        )  # fmt: skip
        assert init.returncode == 0, f"podman machine init failed:\n{init.stdout}\n{init.stderr}"
        h.use_standin_qemu()
        h.init_output = init  # type: ignore[attr-defined]
        start = h.podman("machine", "start", MACHINE, timeout=120)
        h.start_output = start  # type: ignore[attr-defined]
        assert start.returncode == 0, f"podman machine start failed:\n{start.stdout}\n{start.stderr}\n{h.logs()}"
        stop = h.podman("machine", "stop", MACHINE, timeout=60)
        h.stop_output = stop  # type: ignore[attr-defined]
        assert stop.returncode == 0, f"podman machine stop failed:\n{stop.stdout}\n{stop.stderr}\n{h.logs()}"
        yield h
    finally:
        h.cleanup()


def test_start_and_stop_succeed(machine: Harness) -> None:
    out = machine.start_output.stdout + machine.start_output.stderr  # type: ignore[attr-defined]
    assert "started successfully" in out
    args = json.loads((machine.out / "qemu-args.json").read_text())
    # the stand-in booted with podman's own fw_cfg file and ready port
    assert args["ignition"].endswith(f"/{MACHINE}.ign")
    assert args["ready"].endswith(f"{MACHINE}_ready.sock")
    log = (machine.out / "vm.log").read_text()
    assert "sent Ready" in log and "qmp: system_powerdown" in log


def test_staged_root_has_podmans_users_and_keys(machine: Harness) -> None:
    ign = json.loads((machine.home / ".config/containers/podman/machine/qemu" / f"{MACHINE}.ign").read_text())
    users = {u["name"]: u for u in ign["passwd"]["users"]}
    name = machine.user.pw_name
    assert users[name]["uid"] == machine.user.pw_uid
    key = users[name]["sshAuthorizedKeys"][0]
    pubkey = (machine.home / ".ssh" / f"{MACHINE}.pub").read_text().strip()
    assert key.strip() == pubkey
    staged = machine.staged
    assert (staged / "home" / name / ".ssh" / "authorized_keys").read_text().splitlines() == [key]
    assert key in (staged / "root" / ".ssh" / "authorized_keys").read_text().splitlines()
    passwd = (staged / "etc" / "passwd").read_text().splitlines()
    entry = next(line.split(":") for line in passwd if line.startswith(f"{name}:"))
    assert entry[2] == str(machine.user.pw_uid) and entry[5] == f"/home/{name}"
    status = json.loads((machine.out / "agent-status.json").read_text())
    assert status["returncode"] == 0, status


def test_podman_ran_its_4_3_1_commands(machine: Harness) -> None:
    lines = [e["command"] for e in read_jsonl(machine.out / "ssh.jsonl")]
    assert lines == [
        f"sudo chattr -i / ; sudo mkdir -p {RW_TARGET} ; sudo chattr +i / ;",
        f"sudo mount -t 9p -o trans=virtio vol0 {RW_TARGET} -o version=9p2000.L,msize=131072",
        f"sudo mkdir -p {RO_TARGET}",
        f"sudo mount -t 9p -o trans=virtio vol1 {RO_TARGET} -o version=9p2000.L,msize=131072 -o ro",
    ]
    assert (machine.staged / RW_TARGET.lstrip("/")).is_dir()


def test_recorded_freebsd_commands_are_the_p9fs_mounts(machine: Harness) -> None:
    recorded = [e["argv"] for e in read_jsonl(machine.out / "shims.jsonl")]
    assert recorded == [
        ["/sbin/kldload", "-n", "virtio_p9fs"],  # kldload(8): kldload [-nqv] file
        ["/sbin/mount", "-t", "p9fs", "vol0", RW_TARGET],  # p9fs(4): mount -t p9fs <share> <dir>
        ["/sbin/kldload", "-n", "virtio_p9fs"],
        ["/sbin/mount", "-t", "p9fs", "-o", "ro", "vol1", RO_TARGET],
    ]
    # the tags are the ones podman gave qemu
    args = json.loads((machine.out / "qemu-args.json").read_text())
    assert [(v["mount_tag"], "readonly" in v) for v in args["virtfs"]] == [("vol0", False), ("vol1", True)]


def test_machine_json_restored_and_usable(machine: Harness) -> None:
    data = json.loads(machine.machine_json().read_text())
    assert data["CmdLine"][0] == str(machine.base / "bin" / "qemu")
    assert [m["Tag"] for m in data["Mounts"]] == ["vol0", "vol1"]
    listing = machine.podman("machine", "list", "--format", "{{.Name}} {{.Running}}")
    assert listing.returncode == 0, listing.stderr
    assert subprocess.run(["true"]).returncode == 0
