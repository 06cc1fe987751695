"""podman 5.8.2 with and without fpvm's podman helpers, replayed through sshd and the real shims.

tests/fixtures/podman-5.8.2-qemu-helpers-capture/ holds what a real podman-remote 5.8.2 did against
this directory's simulated VM (``machine init -v SRC:/Users/dev/src -v SRC2:/mnt/data:ro``, ``start``,
``stop``), once with ``fpvm podman-machine setup`` in place and once without: the QEMU command line
the VM got (rewritten by fpvm's helper: virtio-9p devices; or podman's own: vhost-user-fs), podman's
ssh commands in order (with the script it fed to root's bash), and the FreeBSD commands the guest's
shims recorded. The replay boots the stand-in QEMU with the captured command line and podman's
Ignition (fpvm's agent provisions the staged root; the stand-in publishes the 9p devices the guest's
``sysctl -e dev.virtio_p9fs`` then lists), logs in like podman (OpenSSH, as the user and as root) and
sends each captured command through the guest shell stand-in and fpvm's linux-compat launchers.

The Ignition's key is replaced by one made here (podman's private key was not kept) and its uid by
the local user's; everything else is the captured data. Needs root (a user, sshd), OpenSSH, runuser.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from contract_harness import USER, Harness

from fpvm_support import FIXTURES

pytestmark = pytest.mark.slow

CAPTURE = FIXTURES / "podman-5.8.2-qemu-helpers-capture"
RW_TARGET, RO_TARGET = "/Users/dev/src", "/mnt/data"
CAPTURED_UID = 999  # the podman user's uid when the capture was made
KLDLOAD = ["/sbin/kldload", "-n", "virtio_p9fs"]
SYSCTL = ["/sbin/sysctl", "-e", "dev.virtio_p9fs"]
NO_VIRTIOFS = "no 9p device offers that tag and FreeBSD has no virtio-fs driver"


def _require_peers() -> None:
    if os.geteuid() != 0:
        pytest.fail("the podman replay runs as root (it creates a user and runs sshd)")
    for tool in ("runuser", "useradd", "ssh-keygen", "ssh"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (.ci/install-debian-packages installs it)")
    if not Path("/usr/sbin/sshd").exists():
        pytest.fail("/usr/sbin/sshd is missing (openssh-server)")


def captured(name: str, base: Path | None = None) -> Any:
    text = (CAPTURE / name).read_text(encoding="utf-8")
    return json.loads(text.replace("$BASE", str(base)) if base is not None else text)


def option(argv: list[str], opt: str, key: str) -> list[str]:
    """Values of ``opt`` whose option string has ``key=`` (``-fw_cfg``'s file, a chardev's path)."""
    out = []
    for i, a in enumerate(argv[:-1]):
        if a == opt:
            for part in argv[i + 1].split(","):
                if part.startswith(key + "="):
                    out.append(part.split("=", 1)[1])
    return out


def ready_socket(argv: list[str]) -> str:
    """The path of the chardev behind the ``org.fedoraproject.port.0`` virtio-serial port."""
    port = next(v for v in option(argv, "-device", "name") if v == "org.fedoraproject.port.0")
    assert port
    device = next(
        argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-device" and "name=" + port in argv[i + 1]
    )
    chardev = dict(p.partition("=")[::2] for p in device.split(",")[1:])["chardev"]
    spec = next(
        argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-chardev" and f"id={chardev}" in argv[i + 1]
    )
    return dict(p.partition("=")[::2] for p in spec.split(",")[1:])["path"]


def chown_user(h: Harness, *paths: Path) -> None:
    for p in paths:
        os.chown(p, h.user.pw_uid, h.user.pw_gid)


class Replay:
    """One captured run replayed on a fresh simulated VM: results per ssh command, records after."""

    def __init__(self, h: Harness, scenario: str) -> None:
        self.h = h
        self.run: dict[str, Any] = captured(f"{scenario}.json", h.base)
        self.machine: dict[str, Any] = captured(f"{scenario}-machine.json", h.base)
        self.results: list[subprocess.CompletedProcess[str]] = []
        self.key = h.home / ".ssh" / "replay"
        self.listeners: list[socket.socket] = []
        self.guest_commands: list[list[str]] = []
        self.p9_devices: list[dict[str, Any]] = []
        self.dirs: dict[str, bool] = {}
        self.system_conf = ""
        self.sock_at_boot: str | None = None
        self.sock_after: str | None = None

    def make_key(self) -> str:
        self.key.parent.mkdir(mode=0o700, exist_ok=True)
        chown_user(self.h, self.key.parent)
        done = self.h.as_user(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)])
        assert done.returncode == 0, done.stderr
        return self.key.with_suffix(".pub").read_text().strip()

    def write_ignition(self, scenario: str, path: Path) -> None:
        """podman's Ignition for this machine, with this run's key and the local user's uid."""
        ign = captured(f"{scenario}-machine.ign", self.h.base)
        pub = self.make_key()
        keyed = [u for u in ign["passwd"]["users"] if u.get("sshAuthorizedKeys")]
        assert [u["name"] for u in keyed] == [USER, "root"]  # podman's key for its user and for root
        for user in keyed:
            user["sshAuthorizedKeys"] = [pub]
            if user.get("uid") == CAPTURED_UID:
                user["uid"] = self.h.user.pw_uid
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ign), encoding="utf-8")
        for p in [path, *path.parents]:
            if p == self.h.base:
                break
            chown_user(self.h, p)

    def serve_client_sockets(self, argv: list[str]) -> None:
        """The virtiofsd sockets QEMU connects to (fpvm's stand-in or virtiofsd in the real run)."""
        for path in option(argv, "-chardev", "path"):
            if "virtiofs" not in Path(path).name:
                continue
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            srv.bind(path)
            srv.listen(1)
            chown_user(self.h, Path(path))
            self.listeners.append(srv)

    def boot(self, scenario: str) -> subprocess.Popen[bytes]:
        h, argv = self.h, list(self.run["qemu_argv"])
        (h.runtime / "podman").mkdir(exist_ok=True)
        chown_user(h, h.runtime / "podman")
        self.write_ignition(scenario, Path(option(argv, "-fw_cfg", "file")[0]))
        self.serve_client_sockets(argv)
        qemu = subprocess.Popen(
            [
                "runuser",
                "-u",
                h.user.pw_name,
                "--",
                "env",
                "-i",
                *h.env(),
                str(h.base / "bin" / "qemu"),
                *argv,
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.wait_ready(ready_socket(argv), qemu)
        return qemu

    def wait_ready(self, path: str, qemu: subprocess.Popen[bytes]) -> None:
        """Read ``Ready`` from the virtio-serial socket, as podman waits for it."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(60)
                    s.connect(path)
                    assert s.recv(64) == b"Ready\n", self.h.logs()
                    return
            except (FileNotFoundError, ConnectionRefusedError):
                if qemu.poll() is not None:
                    break
                time.sleep(0.1)
        pytest.fail("the stand-in QEMU never said Ready:\n" + self.h.logs())

    def ssh(self, user: str, command: str, stdin: str | None) -> subprocess.CompletedProcess[str]:
        """Log in like podman does (its key, its options) straight to the guest's sshd."""
        argv = ["ssh", "-i", str(self.key), "-p", str(self.h.sshd_port), "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", f"{user}@127.0.0.1", command]  # fmt: skip
        return self.h.as_user(argv, timeout=30, input=stdin)

    def replay(self) -> None:
        for entry in self.run["ssh_commands"]:
            self.results.append(self.ssh(entry["user"], entry["command"], entry.get("stdin")))

    def observe(self) -> None:
        """What the guest side did: recorded FreeBSD commands, 9p devices, files in the staged root."""
        path = self.h.out / "shims.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        self.guest_commands = [json.loads(line)["argv"] for line in lines if line.strip()]
        self.p9_devices = list(json.loads((self.h.out / "p9-devices.json").read_text()))
        staged = self.h.staged
        self.dirs = {t: (staged / t.lstrip("/")).is_dir() for t in (RW_TARGET, RO_TARGET)}
        self.system_conf = (staged / "etc/systemd/system.conf.d/default-env.conf").read_text()
        self.uid = self.h.user.pw_uid
        self.sock_after = self.docker_sock()

    def docker_sock(self) -> str | None:
        link = self.h.staged / "var/run/docker.sock"
        return os.readlink(link) if link.is_symlink() else None


def replayed(scenario: str) -> Replay:
    """Boot, replay, keep what the tests look at, clean up (one simulated VM at a time: one user)."""
    h = Harness.create()
    r = Replay(h, scenario)
    qemu = None
    try:
        h.start_sshd()
        qemu = r.boot(scenario)
        r.sock_at_boot = r.docker_sock()
        r.replay()
        r.observe()
    finally:
        if qemu is not None:
            os.killpg(qemu.pid, 15)
            qemu.wait(30)
        for srv in r.listeners:
            srv.close()
        h.cleanup()
    return r


@pytest.fixture(scope="module")
def replays() -> dict[str, Replay]:
    _require_peers()
    return {s: replayed(s) for s in ("with-helpers", "without-helpers", "rootful-with-helpers")}


@pytest.fixture
def with_helpers(replays: dict[str, Replay]) -> Replay:
    return replays["with-helpers"]


@pytest.fixture
def without_helpers(replays: dict[str, Replay]) -> Replay:
    return replays["without-helpers"]


@pytest.fixture
def rootful(replays: dict[str, Replay]) -> Replay:
    return replays["rootful-with-helpers"]


@pytest.fixture(params=["with-helpers", "without-helpers", "rootful-with-helpers"])
def replay(request: pytest.FixtureRequest, replays: dict[str, Replay]) -> Replay:
    return replays[str(request.param)]


def expected_mounts(machine: dict[str, Any]) -> list[list[str]]:
    """What the guest must run per podman volume: p9fs(4) ``mount -t p9fs [-o ro] TAG DIR``.

    The 9p tag is podman's virtiofs tag cut to QEMU's 31 bytes; kldload(8) ``-n`` and the sysctl(8)
    query that finds the device come first, as the shim does for every virtiofs request.
    """
    out = []
    for m in machine["Mounts"]:
        ro = ["-o", "ro"] if m["ReadOnly"] else []
        out += [KLDLOAD, SYSCTL, ["/sbin/mount", "-t", "p9fs", *ro, m["Tag"][:31], m["Target"]]]
    return out


def test_captured_runs_init_and_stop(replay: Replay) -> None:
    assert replay.run["steps"]["init"]["returncode"] == 0
    assert replay.run["steps"]["stop"]["returncode"] == 0
    assert "stopped successfully" in replay.run["steps"]["stop"]["stdout"]


def test_with_helpers_podman_started_and_every_volume_is_a_p9fs_mount(with_helpers: Replay) -> None:
    replay = with_helpers
    mounts = [(m["Target"], m["ReadOnly"], m["Type"]) for m in replay.machine["Mounts"]]
    assert mounts == [(RW_TARGET, False, "virtiofs"), (RO_TARGET, True, "virtiofs")]
    assert any("offered as virtio-9p" in line for line in replay.run["helpers_log"])
    start = replay.run["steps"]["start"]
    assert start["returncode"] == 0 and 'Machine "fbsd" started successfully' in start["stdout"]
    # fpvm's helper gave QEMU 9p devices (read-only for :ro) instead of podman's vhost-user-fs ones
    argv = replay.run["qemu_argv"]
    assert "vhost-user-fs-pci" not in " ".join(argv)
    fsdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-fsdev"]
    assert [f.endswith(",readonly=on") for f in fsdevs] == [m["ReadOnly"] for m in replay.machine["Mounts"]]
    # every captured ssh command succeeds again through sshd and the real shims
    assert [r.returncode for r in replay.results] == [0] * len(replay.results), [
        r.stderr for r in replay.results
    ]
    commands = [e["command"] for e in replay.run["ssh_commands"]]
    assert commands[-1].startswith(
        f'sudo mount -t virtiofs {replay.machine["Mounts"][1]["Tag"]} "{RO_TARGET}"'
    )
    assert commands[-1].endswith(",ro")
    # the guest ran exactly the p9fs mounts, as recorded in the capture
    want = expected_mounts(replay.machine)
    assert replay.guest_commands == want
    assert replay.run["guest_commands"] == want
    # the stand-in QEMU published the devices the guest's sysctl listed
    devices = replay.p9_devices
    assert devices == replay.run["p9_devices"]
    assert [(d["tag"], d["readonly"]) for d in devices] == [
        (m["Tag"][:31], m["ReadOnly"]) for m in replay.machine["Mounts"]
    ]
    assert replay.dirs == {RW_TARGET: True, RO_TARGET: True}
    # rootless: docker.sock is the user's API socket, from the Ignition's tmpfiles line at boot
    assert replay.run["docker_sock"] == f"/run/user/{CAPTURED_UID}/podman/podman.sock"
    assert replay.sock_at_boot == replay.sock_after == f"/run/user/{replay.uid}/podman/podman.sock"


def test_without_helpers_start_fails_with_fpvms_message(without_helpers: Replay) -> None:
    replay = without_helpers
    assert "helpers_log" not in replay.run and replay.run["virtiofsd"]  # podman ran (a stand-in) virtiofsd
    start = replay.run["steps"]["start"]
    assert start["returncode"] == 125
    tag = replay.machine["Mounts"][0]["Tag"]
    message = f"mount: cannot mount virtiofs tag '{tag}' at {RW_TARGET}: {NO_VIRTIOFS}"
    assert message in start["stderr"]
    assert "vhost-user-fs-pci" in " ".join(replay.run["qemu_argv"])
    assert "virtio-9p-pci" not in " ".join(replay.run["qemu_argv"])
    # the replayed failing mount says the same, and nothing was mounted
    *before, last = replay.results
    assert [r.returncode for r in before] == [0] * len(before)
    assert last.returncode == 1 and message in last.stderr
    mounts = [(m["Target"], m["ReadOnly"]) for m in replay.machine["Mounts"]]
    assert mounts == [(RW_TARGET, False), (RO_TARGET, True)]
    assert replay.guest_commands == replay.run["guest_commands"] == [KLDLOAD, SYSCTL]
    assert replay.p9_devices == replay.run["p9_devices"] == []


def test_podmans_root_script_ran_as_the_guests_root(replay: Replay) -> None:
    """podman 5 logs in as root to feed its proxy script to bash; fpvm's systemctl shim ends it."""
    entries = [e for e in replay.run["ssh_commands"] if e["user"] == "root"]
    assert [e["command"] for e in entries] == ["/usr/bin/bash"]
    assert entries[0]["stdin"].rstrip().endswith("systemctl daemon-reload")
    assert replay.results[replay.run["ssh_commands"].index(entries[0])].returncode == 0
    assert replay.system_conf == "[Manager]\n"  # /etc of the guest: the staged root
    assert replay.run["ssh_commands"][0] == {"user": USER, "command": "true"}  # podman's readiness probe


def test_rootful_start_points_docker_sock_at_roots_api(rootful: Replay) -> None:
    """``machine set --rootful`` then start: podman's tmpfiles lines move docker.sock to root's socket."""
    steps = rootful.run["steps"]
    assert steps["set"]["returncode"] == 0 and steps["start"]["returncode"] == 0
    assert rootful.run["docker_sock"] == "/run/podman/podman.sock"
    commands = [e["command"] for e in rootful.run["ssh_commands"]]
    assert commands[-2:] == [
        'sudo bash -c \'echo "L+  /run/docker.sock   -    -    -     -   /run/podman/podman.sock" '
        "> /etc/tmpfiles.d/podman-docker.conf'",
        "sudo systemd-tmpfiles --create --prefix=/run/docker.sock",
    ]
    assert [r.returncode for r in rootful.results] == [0] * len(rootful.results)
    # the boot made the rootless link (the Ignition was written before `set --rootful`); podman's
    # lines, replayed, point it at root's socket
    assert rootful.sock_at_boot == f"/run/user/{rootful.uid}/podman/podman.sock"
    assert rootful.sock_after == "/run/podman/podman.sock"
    # podman 5.8.2's default volume (HOME at the same path, no -v given) is a p9fs mount too
    [home] = rootful.machine["Mounts"]
    assert home["Source"] == home["Target"] and not home["ReadOnly"]
    assert rootful.guest_commands == expected_mounts(rootful.machine) == rootful.run["guest_commands"]
