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
from typing import Any

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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
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
        h.results["init"] = init
        start = h.podman("machine", "start", MACHINE, timeout=120)
        h.results["start"] = start
        assert start.returncode == 0, (
            f"podman machine start failed:\n{start.stdout}\n{start.stderr}\n{h.logs()}"
        )
        # a user's own command through `podman machine ssh` reaches the same shims
        h.results["ssh"] = h.podman("machine", "ssh", MACHINE, "sudo systemctl restart podman.socket")
        stop = h.podman("machine", "stop", MACHINE, timeout=60)
        h.results["stop"] = stop
        assert stop.returncode == 0, f"podman machine stop failed:\n{stop.stdout}\n{stop.stderr}\n{h.logs()}"
        yield h
    finally:
        h.cleanup()


def test_start_and_stop_succeed(machine: Harness) -> None:
    out = machine.results["start"].stdout + machine.results["start"].stderr
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
    assert lines[:4] == [
        f"sudo chattr -i / ; sudo mkdir -p {RW_TARGET} ; sudo chattr +i / ;",
        f"sudo mount -t 9p -o trans=virtio vol0 {RW_TARGET} -o version=9p2000.L,msize=131072",
        f"sudo mkdir -p {RO_TARGET}",
        f"sudo mount -t 9p -o trans=virtio vol1 {RO_TARGET} -o version=9p2000.L,msize=131072 -o ro",
    ]
    assert (machine.staged / RW_TARGET.lstrip("/")).is_dir()


def test_recorded_freebsd_commands_are_the_p9fs_mounts(machine: Harness) -> None:
    recorded = [e["argv"] for e in read_jsonl(machine.out / "shims.jsonl")]
    assert recorded[:4] == [
        ["/sbin/kldload", "-n", "virtio_p9fs"],  # kldload(8): kldload [-nqv] file
        ["/sbin/mount", "-t", "p9fs", "vol0", RW_TARGET],  # p9fs(4): mount -t p9fs <share> <dir>
        ["/sbin/kldload", "-n", "virtio_p9fs"],
        ["/sbin/mount", "-t", "p9fs", "-o", "ro", "vol1", RO_TARGET],
    ]
    # the tags are the ones podman gave qemu
    args = json.loads((machine.out / "qemu-args.json").read_text())
    assert [(v["mount_tag"], "readonly" in v) for v in args["virtfs"]] == [("vol0", False), ("vol1", True)]


def test_machine_json_points_at_the_standin_and_podman_still_reads_it(machine: Harness) -> None:
    data = json.loads(machine.machine_json().read_text())
    orig = json.loads(machine.machine_json().with_suffix(".json.orig").read_text())
    assert data["CmdLine"][0] == str(machine.base / "bin" / "qemu")
    assert "/qemu-system-" in orig["CmdLine"][0] and data["CmdLine"][1:] == orig["CmdLine"][1:]
    assert [(m["Tag"], m["Target"], m["ReadOnly"]) for m in data["Mounts"]] == [
        ("vol0", RW_TARGET, False),
        ("vol1", RO_TARGET, True),
    ]
    gvproxy = json.loads((machine.out / "gvproxy-args.json").read_text())
    assert gvproxy[gvproxy.index("-ssh-port") + 1] == str(data["Port"])
    listing = machine.podman("machine", "list", "--format", "{{.Name}} {{.Running}}")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split() == [f"{MACHINE}*", "false"]  # "*": the default machine


def test_podman_machine_ssh_reaches_the_shims(machine: Harness) -> None:
    done = machine.results["ssh"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert [e["command"] for e in read_jsonl(machine.out / "ssh.jsonl")][
        4
    ] == "sudo systemctl restart podman.socket"
    # service(8): service script command
    recorded = [e["argv"] for e in read_jsonl(machine.out / "shims.jsonl")]
    assert recorded[4] == ["/usr/sbin/service", "podman_service", "restart"]


def test_api_socket_where_gvproxy_forwards_to(machine: Harness) -> None:
    """gvproxy's -forward-dest (a Linux path under /run) reaches FreeBSD's /var/run/podman/podman.sock."""
    gvproxy = json.loads((machine.out / "gvproxy-args.json").read_text())
    dest = gvproxy[gvproxy.index("-forward-dest") + 1]
    assert dest == f"/run/user/{machine.user.pw_uid}/podman/podman.sock"
    staged = machine.staged
    assert os.readlink(staged / "run") == "var/run"  # relative: the same inside and outside the VM
    assert os.path.realpath(staged / dest.lstrip("/")) == str(staged / "var/run/podman/podman.sock")
    assert os.path.realpath(staged / "run/podman/podman.sock") == str(staged / "var/run/podman/podman.sock")


# -- podman 5.x command lines (research note B §4.2, §5), through the same sshd, shell and shims ------
SHA_TAG = "a2a0ee2c717462feb1de2f5afd59de5fd2d8"  # 5.2+: sha256("/Users")[:36]

# What podman 5.x feeds to `/usr/bin/bash` as root on every start (pkg/machine/proxyenv): it writes the
# proxy variables in four formats and ends with `systemctl daemon-reload`, whose status decides.
PROXY_SCRIPT = """\
SYSTEMD_SYSTEM_CONF=/etc/systemd/system.conf.d/default-env.conf
ENVD_CONF=/etc/environment.d/default-env.conf
PROFILE_CONF=/etc/profile.d/default-env.sh
mkdir -p /etc/profile.d /etc/environment.d /etc/systemd/system.conf.d/
rm -f $SYSTEMD_SYSTEM_CONF $ENVD_CONF $PROFILE_CONF
echo "[Manager]" >> $SYSTEMD_SYSTEM_CONF
for proxy in "HTTP_PROXY=http://host.containers.internal:3128" "NO_PROXY=.corp,host.containers.internal"; do
\tprintf "DefaultEnvironment=\\"%s\\"\\n" "$proxy" >> $SYSTEMD_SYSTEM_CONF
\tprintf "%q\\n" "$proxy" >> $ENVD_CONF
\tprintf "export %q\\n" "$proxy" >> $PROFILE_CONF
done
systemctl daemon-reload
"""


def ssh(machine: Harness, command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Log in like podman does (its key, its options) straight to the guest's sshd."""
    key = machine.home / ".ssh" / MACHINE
    user = machine.user.pw_name
    argv = ["ssh", "-i", str(key), "-p", str(machine.sshd_port), "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            f"{user}@127.0.0.1", command]  # fmt: skip
    return machine.as_user(argv, timeout=30, input=stdin)


def new_records(machine: Harness, command: str, stdin: str | None = None) -> tuple[int, str, list[list[str]]]:
    before = len(read_jsonl(machine.out / "shims.jsonl"))
    done = ssh(machine, command, stdin)
    after = [[str(a) for a in e["argv"]] for e in read_jsonl(machine.out / "shims.jsonl")][before:]
    return done.returncode, done.stderr, after


def test_5x_readiness_probe_and_quoted_chattr_line(machine: Harness) -> None:
    assert new_records(machine, "true") == (0, "", [])
    rc, err, cmds = new_records(
        machine, 'sudo chattr -i / ; sudo mkdir -p "/Users/dev/five" ; sudo chattr +i / ;'
    )
    assert (rc, cmds) == (0, []), err
    assert (machine.staged / "Users/dev/five").is_dir()


def test_5x_9p_with_cache_mmap(machine: Harness) -> None:
    rc, err, cmds = new_records(
        machine,
        f"sudo mount -t 9p -o trans=virtio vol0 {RW_TARGET} -o version=9p2000.L,msize=131072,cache=mmap",
    )
    assert rc == 0, err
    assert cmds == [["/sbin/kldload", "-n", "virtio_p9fs"], ["/sbin/mount", "-t", "p9fs", "vol0", RW_TARGET]]


def test_5x_virtiofs_fails_naming_the_cause(machine: Harness) -> None:
    line = f'sudo mount -t virtiofs {SHA_TAG} "{RW_TARGET}" -o context="system_u:object_r:nfs_t:s0"'
    rc, err, cmds = new_records(machine, line)
    assert rc != 0
    assert f"cannot mount virtiofs tag '{SHA_TAG}' at {RW_TARGET}" in err and "no virtio-fs driver" in err
    # it looked for a 9p device with that tag (sysctl(8) -e: name=value) and mounted nothing
    assert cmds == [["/sbin/kldload", "-n", "virtio_p9fs"], ["/sbin/sysctl", "-e", "dev.virtio_p9fs"]]


def test_5x_proxy_script_ends_in_a_daemon_reload_that_applies_it(machine: Harness) -> None:
    rc, err, cmds = new_records(machine, "/usr/bin/bash", stdin=PROXY_SCRIPT)
    assert rc == 0, err
    staged = machine.staged
    envd = (staged / "etc/environment.d/default-env.conf").read_text()
    assert envd.splitlines()[1] == "NO_PROXY=.corp\\,host.containers.internal"  # bash %q escapes the comma
    profile = (staged / "usr/local/etc/profile.d/fpvm-proxy.sh").read_text()
    assert "export HTTP_PROXY='http://host.containers.internal:3128'" in profile
    assert "export no_proxy='.corp,host.containers.internal'" in profile
    assert "podman_service_env=" in (staged / "etc/rc.conf.d/podman_service").read_text()
    assert cmds == [
        ["/usr/sbin/service", "podman_service", "status"],
        ["/usr/sbin/service", "podman_service", "restart"],
    ]
    # every start runs it again: the same environment changes nothing
    assert new_records(machine, "/usr/bin/bash", stdin=PROXY_SCRIPT)[::2] == (0, [])


def test_5x_rootful_docker_sock_through_tmpfiles(machine: Harness) -> None:
    # the boot applied the Ignition's own tmpfiles.d line (kept in the guest, not skipped)
    assert (machine.staged / "etc/tmpfiles.d/podman-docker.conf").is_file()
    assert os.readlink(machine.staged / "var/run/docker.sock") == "/run/podman/podman.sock"
    # `podman machine set --rootless` then start: docker.sock follows the user's socket ...
    uid = machine.user.pw_uid
    line = f"L+  /run/docker.sock   -    -    -     -   /run/user/{uid}/podman/podman.sock"
    rc, err, _ = new_records(machine, f"sudo bash -c 'echo \"{line}\" > /etc/tmpfiles.d/podman-docker.conf'")
    assert rc == 0, err
    rc, err, cmds = new_records(machine, "sudo systemd-tmpfiles --create --prefix=/run/docker.sock")
    assert (rc, cmds) == (0, []), err
    assert os.readlink(machine.staged / "var/run/docker.sock") == f"/run/user/{uid}/podman/podman.sock"
    # ... and `set --rootful` then start (podman 5.8.2's recorded lines) brings it back to root's
    line = "L+  /run/docker.sock   -    -    -     -   /run/podman/podman.sock"
    rc, err, _ = new_records(machine, f"sudo bash -c 'echo \"{line}\" > /etc/tmpfiles.d/podman-docker.conf'")
    assert rc == 0, err
    rc, err, cmds = new_records(machine, "sudo systemd-tmpfiles --create --prefix=/run/docker.sock")
    assert (rc, cmds) == (0, []), err
    assert os.readlink(machine.staged / "var/run/docker.sock") == "/run/podman/podman.sock"
