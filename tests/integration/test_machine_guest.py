"""Host launcher -> guest: what ``fpvm machine`` hands its VM is what the guest agent can use.

One real ``fpvm machine init`` (stand-in GPT disk, XDG dirs in a temporary folder, two volumes, one
read-only) and its ``start --dry-run`` argv; then the guest's commands on that very config:
``fpvm ignition validate``, ``fpvm guest provision`` on a FreeBSD-shaped staged root, and the per-boot
mount step (``fpvm.guest.mounts.plan_mounts`` and ``fpvm guest boot``), whose recorded ``mount -t p9fs``
commands must name the tags QEMU offers (``-virtfs ...,mount_tag=``). The slow test boots that argv in
real QEMU (paused) and provisions from the bytes read back through fw_cfg.

FreeBSD command forms asserted (FreeBSD 15 man pages): kldload(8) ``kldload -n name`` ("do not try to
load module if already loaded"); p9fs(4) ``mount -t p9fs <share name> <dir>``; mount(8) ``-o ro``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from integration_support import add_freebsd_base, make_disk, master_passwd, records, stop, wait_for_qmp

from fpvm.contract import FWCFG_CONFIG as COREOS_CONFIG
from fpvm.guest import mounts, rcd, ready
from fpvm.guest.rootfs import RootFS
from fpvm.ignition import parse
from fpvm.image import recipe
from fpvm_runner import run_fpvm

NAME = "itest"
VOLUMES = (("src", "/Users/me/src", False), ("data", "/mnt/data", True))


@dataclass
class HostMachine:
    """One machine made by the real ``fpvm machine init``, and what ``start --dry-run`` would run."""

    base: Path
    env: dict[str, str]
    dir: Path
    state: dict[str, object]
    config: bytes
    pubkey: str
    argv: list[str]
    sources: dict[str, Path]


@pytest.fixture(scope="module")
def host_machine() -> Iterator[HostMachine]:
    base = Path(tempfile.mkdtemp(prefix="fpvmi", dir="/tmp"))  # short: unix socket paths live here
    try:
        home, run = base / "h", base / "r"
        home.mkdir()
        run.mkdir(mode=0o700)
        conf = base / "containers.conf"
        conf.touch()
        env = {
            **os.environ,
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "share"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_RUNTIME_DIR": str(run),
            "TZ": "Europe/Paris",
            "CONTAINERS_CONF": str(conf),  # podman as root would otherwise write /etc/containers
        }
        for var in ("FPVM_QEMU", "FPVM_FIRMWARE"):
            env.pop(var, None)
        sources: dict[str, Path] = {}
        volume_args: list[str] = []
        for name, target, ro in VOLUMES:
            sources[target] = base / name
            sources[target].mkdir()
            volume_args += ["-v", f"{sources[target]}:{target}{':ro' if ro else ''}"]
        disk = make_disk(base / "freebsd.raw")
        run_fpvm("machine", "init", NAME, "--image", str(disk), "--arch", "amd64", "--disk-size", "1",
                 *volume_args, env=env, check=True, text=False)  # fmt: skip
        # --network user: with gvproxy installed the argv would need gvproxy's socket.
        out = run_fpvm("machine", "start", NAME, "--dry-run", "--network", "user", env=env, check=True,
                       text=False)  # fmt: skip
        lines = [ln for ln in out.stdout.decode().splitlines() if ln.strip() and not ln.startswith("#")]
        assert len(lines) == 1, out.stdout
        mdir = home / "share" / "fpvm" / "machines" / NAME
        yield HostMachine(
            base=base,
            env=env,
            dir=mdir,
            state=json.loads((mdir / "machine.json").read_text()),
            config=(mdir / "config.ign").read_bytes(),
            pubkey=(mdir / "id_ed25519.pub").read_text().strip(),
            argv=shlex.split(lines[0]),
            sources=sources,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def virtfs_shares(argv: list[str]) -> list[dict[str, str]]:
    """The ``-virtfs`` devices of a QEMU argv as {option: value} (``readonly`` present when set)."""
    out = []
    for i, word in enumerate(argv[:-1]):
        if word == "-virtfs":
            opts = argv[i + 1].split(",")
            assert opts[0] == "local", argv[i + 1]
            out.append(dict(o.partition("=")[::2] for o in opts[1:]))
    return out


def expected_mount_commands(m: HostMachine) -> list[list[str]]:
    """kldload once, then one p9fs mount per QEMU share, with the tag QEMU gives it, in argv order."""
    by_source = {str(src): target for target, src in m.sources.items()}
    readonly = {target: ro for _, target, ro in VOLUMES}
    cmds = [["/sbin/kldload", "-n", "virtio_p9fs"]]
    for share in virtfs_shares(m.argv):
        target = by_source[share["path"]]
        assert (share.get("readonly") == "on") == readonly[target], share
        cmds.append(["/sbin/mount", "-t", "p9fs", *(["-o", "ro"] if readonly[target] else []),
                     share["mount_tag"], target])  # fmt: skip
    return cmds


def mount_records(argvs: list[list[str]]) -> list[list[str]]:
    return [a for a in argvs if a and a[0] in ("/sbin/kldload", "/sbin/mount", "kldload", "mount")]


def host_uid() -> int:
    # docs/machine.md: core gets the host uid; 1000 when fpvm runs as root.
    return os.getuid() or 1000


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    return add_freebsd_base(tmp_path / "root")


def write_config(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "config.ign"
    path.write_bytes(data)
    return path


def assert_provisioned(root: Path, m: HostMachine) -> None:
    """The guest state the machine's config asks for: users, keys, sudo, marker, mount table."""
    users = master_passwd(root)
    assert users["core"][2] == str(host_uid()) == str(m.state["uid"])
    assert users["root"][2] == "0" and users["root"][8] == "/root"
    assert (root / "root/.ssh/authorized_keys").read_text().splitlines() == [m.pubkey]
    home = root / users["core"][8].lstrip("/")
    assert (home / ".ssh/authorized_keys").read_text().splitlines() == [m.pubkey]
    sudo_rules = [
        line
        for f in sorted((root / "usr/local/etc/sudoers.d").iterdir())
        for line in f.read_text().splitlines()
        if line.startswith("core ")
    ]
    assert sudo_rules == ["core ALL=(ALL:ALL) NOPASSWD: ALL"]
    assert (root / "etc/containers/podman-machine").read_text() == "qemu\n"
    table = json.loads((root / "usr/local/etc/fpvm/mounts.json").read_text())
    assert table == {
        "mounts": [{"tag": s["mount_tag"], "target": t, "readonly": ro}
                   for s, (_, t, ro) in zip(virtfs_shares(m.argv), VOLUMES, strict=True)]
    }  # fmt: skip


def test_machine_config_is_valid_ignition(host_machine: HostMachine, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, host_machine.config)
    plain = run_fpvm("ignition", "validate", str(cfg), text=False)
    assert plain.returncode == 0, plain.stderr
    report = json.loads(run_fpvm("ignition", "validate", "--json", str(cfg), check=True, text=False).stdout)
    assert report["valid"] is True and report["errors"] == [] and report["warnings"] == []


def test_qemu_argv_offers_the_config_and_one_share_per_volume(host_machine: HostMachine) -> None:
    argv = host_machine.argv
    fwcfg = [argv[i + 1] for i, w in enumerate(argv[:-1]) if w == "-fw_cfg"]
    assert fwcfg == [f"name={COREOS_CONFIG},file={host_machine.dir / 'config.ign'}"]
    shares = virtfs_shares(argv)
    assert [s["path"] for s in shares] == [str(host_machine.sources[t]) for _, t, _ in VOLUMES]
    assert [s["mount_tag"] for s in shares] == ["fpvm0", "fpvm1"]


def provision_and_check(m: HostMachine, staged: Path, tmp_path: Path, config: bytes) -> None:
    """Provision ``staged`` from ``config`` as the first boot does, then check the state and the mounts
    (the first boot mounts the shares too, exactly as QEMU names them)."""
    cfg = write_config(tmp_path, config)
    rec = tmp_path / "cmds.jsonl"
    result = run_fpvm("guest", "provision", "--root", str(staged), "--config", str(cfg), "--record", str(rec),
                      "--no-ready", text=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert_provisioned(staged, m)
    assert mount_records(records(rec)) == expected_mount_commands(m)


def test_guest_provisions_machine_config(host_machine: HostMachine, staged: Path, tmp_path: Path) -> None:
    provision_and_check(host_machine, staged, tmp_path, host_machine.config)


def test_plan_mounts_matches_qemu_tags(host_machine: HostMachine, staged: Path, tmp_path: Path) -> None:
    config = parse(host_machine.config)
    actions = mounts.plan_mounts(config, RootFS(str(staged)))
    argvs = [a.to_json()["argv"] for a in actions if "argv" in a.to_json()]
    assert argvs == expected_mount_commands(host_machine)


def test_boot_mounts_match_qemu_tags(host_machine: HostMachine, staged: Path, tmp_path: Path) -> None:
    """A later boot (rc.d/fpvm runs ``fpvm guest boot``) re-mounts every share, and nothing else changes."""
    cfg = write_config(tmp_path, host_machine.config)
    first = run_fpvm("guest", "provision", "--root", str(staged), "--config", str(cfg), "--record",
                     str(tmp_path / "first.jsonl"), "--no-ready", text=False)  # fmt: skip
    assert first.returncode == 0, first.stderr
    rec = tmp_path / "boot.jsonl"
    result = run_fpvm("guest", "boot", "--root", str(staged), "--config", str(cfg), "--record", str(rec),
                      "--no-fwcfg", "--qemufwcfg-mount", str(tmp_path / "no-qemufwcfg"),
                      text=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    argvs = records(rec)
    assert mount_records(argvs) == expected_mount_commands(host_machine)
    # Anything else a later boot runs is the API group membership (pw groupmod), never account changes.
    others = [a for a in argvs if a not in mount_records(argvs)]
    assert all(a[0] == "pw" and "groupmod" in a for a in others), others
    assert_provisioned(staged, host_machine)


@pytest.mark.slow
def test_config_through_qemu_fwcfg(host_machine: HostMachine, staged: Path, tmp_path: Path) -> None:
    """QEMU device -> fw_cfg protocol -> Ignition -> staged root, from the machine's own argv."""
    argv = list(host_machine.argv)
    exe = shutil.which(argv[0])
    if exe is None:
        pytest.fail(f"{argv[0]} is not installed: this test needs the real QEMU")
    # What cannot work here: KVM/HVF (TCG is always there) and -cpu host (KVM only). -S keeps it paused.
    i = argv.index("-accel")
    argv[i + 1] = "tcg"
    if "-cpu" in argv:
        argv[argv.index("-cpu") + 1] = "max"
    argv.insert(1, "-S")
    qmp = next(re.sub(r"^unix:|,.*$", "", argv[i + 1]) for i, w in enumerate(argv[:-1]) if w == "-qmp")
    Path(qmp).parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # what `start` creates
    log = tmp_path / "qemu.log"
    with log.open("wb") as fh:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_for_qmp(Path(qmp), process, log)
        got = run_fpvm("debug", "fwcfg", "--qmp", qmp, "get", COREOS_CONFIG, env=host_machine.env,
                       timeout=300, text=False)  # fmt: skip
        assert got.returncode == 0, got.stderr
    finally:
        stop(process)
    assert got.stdout == host_machine.config
    provision_and_check(host_machine, staged, tmp_path, got.stdout)


def test_ready_port_is_the_qemu_virtserialport(host_machine: HostMachine) -> None:
    """The guest writes Ready where QEMU's virtserialport appears in FreeBSD: /dev/vtcon/<name>."""
    ports = [
        dict(o.partition("=")[::2] for o in host_machine.argv[i + 1].split(",")[1:])
        for i, w in enumerate(host_machine.argv[:-1])
        if w == "-device" and host_machine.argv[i + 1].startswith("virtserialport,")
    ]
    assert len(ports) == 1, host_machine.argv
    port = f"/dev/vtcon/{ports[0]['name']}"  # virtio_console(4) names ports /dev/vtcon/<name>
    assert port == ready.READY_PORT
    assert f'fpvm_ready_port:="{port}"' in rcd.script_text("fpvm_ready").decode()
    # virtio_console must be loaded for the port to exist: the image's loader.conf.d does it.
    assert recipe.loader_conf("amd64")["fpvm-modules"]["virtio_console_load"] == "YES"


def test_ignition_show_reads_the_machine_config(host_machine: HostMachine, tmp_path: Path) -> None:
    """``fpvm ignition show`` (ignition's command, guest's implementation) on the launcher's config."""
    cfg = write_config(tmp_path, host_machine.config)
    plain = run_fpvm("ignition", "show", str(cfg), text=False)
    assert plain.returncode == 0, plain.stderr
    shown = json.loads(run_fpvm("ignition", "show", "--json", str(cfg), check=True, text=False).stdout)
    users = {u["name"]: u for u in shown["users"]}
    assert users["core"]["uid"] == host_uid() and set(users) == {"core", "root"}


def test_machine_key_names_the_machine(host_machine: HostMachine, staged: Path, tmp_path: Path) -> None:
    """The key the guest installs says whose it is: ``fpvm-NAME``, the comment ``make_key`` means to give
    (``ssh-keygen -C fpvm-<machine folder name>``), not the name of init's temporary build folder."""
    assert host_machine.pubkey.split()[2:] == [f"fpvm-{NAME}"]
    cfg = write_config(tmp_path, host_machine.config)
    run_fpvm("guest", "provision", "--root", str(staged), "--config", str(cfg), "--record",
             str(tmp_path / "r"), "--no-ready", check=True, text=False)  # fmt: skip
    assert (staged / "root/.ssh/authorized_keys").read_text().split()[2:] == [f"fpvm-{NAME}"]


@pytest.mark.parametrize(
    "target",
    ["/Users/me/My Project", "/Users/me/../src", "/Users/me/it's"],
    ids=["space", "dotdot", "quote"],
)
def test_init_refuses_a_target_the_guest_cannot_mount(host_machine: HostMachine, target: str) -> None:
    """A volume target the guest refuses makes the whole config invalid in the guest (no users, no keys),
    so ``fpvm machine init`` must refuse it up front, with one message, leaving nothing behind."""
    with pytest.raises(mounts.MountError):
        mounts.check_target(target)  # the guest's rule for fpvm's mount table
    name = "bad-" + re.sub(r"[^a-z]", "", target.lower())[-8:]
    disk = host_machine.base / "freebsd.raw"
    src = host_machine.sources["/Users/me/src"]
    result = run_fpvm("machine", "init", name, "--image", str(disk), "--arch", "amd64", "--disk-size", "1",
                      "-v", f"{src}:{target}", env=host_machine.env, text=False)  # fmt: skip
    machines = host_machine.dir.parent
    assert result.returncode != 0, (
        f"init accepted {target!r}; the guest would reject {machines / name}/config.ign"
    )
    assert target in result.stderr.decode(), result.stderr
    assert not (machines / name).exists()
