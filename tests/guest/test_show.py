"""`fpvm ignition show` and `fpvm guest plan`: views of the same plan, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from guest_support import make_root, minimal, provision, write_config

from fpvm.guest.show import LEGEND
from fpvm_runner import run_fpvm
from fpvm_support import PODMAN_CAPTURE, PODMAN_IGNITION


def test_show_readable_marks_each_item() -> None:
    res = run_fpvm("ignition", "show", str(PODMAN_CAPTURE / "machine.ign"))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "core uid 1001: 1 key(s): ssh-ed25519 …user@host" in out
    assert "[translate] /etc/containers/containers.conf  30 bytes" in out
    assert "[translate] /etc/tmpfiles.d/podman-docker.conf" in out
    assert "systemd-tmpfiles --create: L/L+ lines become symlinks" in out
    assert "[translate] /usr/local/bin/docker -> /usr/bin/podman" in out
    assert "[translate] /etc/localtime -> /usr/share/zoneinfo/Europe/London" in out
    assert "[ignore   ] docker.service (masked)" in out
    assert "[translate] podman.socket (enabled)" in out


def test_show_json_matches_the_config() -> None:
    cfg_path = PODMAN_IGNITION / "v5.8.2-applehv-macvols.ign"
    res = run_fpvm("ignition", "show", str(cfg_path), "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    cfg = json.loads(cfg_path.read_text())
    assert [f["path"] for f in info["files"]] == [f["path"] for f in cfg["storage"]["files"]]
    assert [u["name"] for u in info["units"]] == [u["name"] for u in cfg["systemd"]["units"]]
    by_path = {f["path"]: f for f in info["files"]}
    assert by_path["/etc/containers/podman-machine"]["size"] == "8 bytes"  # "applehv\n"
    assert by_path["/var/lib/systemd/linger/core"]["disposition"] == "ignore"
    units = {u["name"]: u for u in info["units"]}
    assert units["Users.mount"]["disposition"] == "translate"
    assert units["zincati.service"]["disposition"] == "ignore"
    users = {u["name"]: u for u in info["users"] if "name" in u}
    assert users["core"]["uid"] == 501 and len(users["root"]["keys"]) == 1


def test_show_invalid_config(tmp_path: Path) -> None:
    bad = write_config(tmp_path / "bad.ign", minimal(passwd={"users": [{"name": "no good"}]}))
    res = run_fpvm("ignition", "show", str(bad))
    assert res.returncode == 1
    assert "$.passwd.users[0].name" in res.stderr and "Traceback" not in res.stderr


def test_plan_json_lists_typed_actions() -> None:
    res = run_fpvm("guest", "plan", "--config", str(PODMAN_CAPTURE / "machine.ign"), "--json")
    assert res.returncode == 0, res.stderr
    actions = json.loads(res.stdout)
    kinds = {a["kind"] for a in actions}
    assert {"user", "ssh-keys", "sudoers", "file", "directory", "link", "note", "rcconf"} <= kinds
    user = next(a for a in actions if a["kind"] == "user" and a["name"] == "core")
    assert user["uid"] == 1001 and user["disposition"] == "apply"
    conf = next(a for a in actions if a.get("config_path") == "/etc/containers/containers.conf")
    assert conf["path"] == "/usr/local/etc/containers/containers.conf" and conf["size"] == 30
    assert all("disposition" in a for a in actions)


def test_plan_readable() -> None:
    res = run_fpvm("guest", "plan", "--config", str(PODMAN_CAPTURE / "machine.ign"))
    assert res.returncode == 0
    assert "[apply    ] user core, uid 1001  ($.passwd.users[0])" in res.stdout


def _mount_unit(name: str, where: str) -> dict:
    return {
        "name": name,
        "enabled": True,
        "contents": f"[Mount]\nWhat=vol0\nWhere={where}\nType=virtiofs\n",
    }


def test_skipped_mount_unit_has_one_classification(tmp_path: Path) -> None:
    """A mount unit the mount step skips (target with a space, podman 5.5+ macOS folders) is "ignore"
    with the mount step's reason in both views, never also "mounted at every boot"."""
    cfg = minimal(
        systemd={
            "units": [
                _mount_unit("Users.mount", "/Users"),
                _mount_unit("Volumes-My\\x20Disk.mount", "/Volumes/My Disk"),
            ]
        }
    )
    path = write_config(tmp_path / "mounts.ign", cfg)
    res = run_fpvm("ignition", "show", str(path), "--json")
    assert res.returncode == 0, res.stderr
    units = {u["name"]: u for u in json.loads(res.stdout)["units"]}
    bad = units["Volumes-My\\x20Disk.mount"]
    assert bad["disposition"] == "ignore"
    assert (
        len(bad["notes"]) == 1 and "not mounted" in bad["notes"][0] and "contains a space" in bad["notes"][0]
    )
    assert units["Users.mount"]["disposition"] == "translate"
    assert any("mounted at every boot" in n for n in units["Users.mount"]["notes"])

    res = run_fpvm("guest", "plan", "--config", str(path), "--json")
    assert res.returncode == 0, res.stderr
    for_bad = [a for a in json.loads(res.stdout) if a.get("source") == "$.systemd.units[1]"]
    assert [(a["kind"], a["disposition"]) for a in for_bad] == [("note", "ignore")]
    assert "contains a space" in for_bad[0]["note"]


NETRECOVER = Path(__file__).resolve().parent / "podman-configs/v4.9.5-qemu-darwin-netrecover.ign"
NETRECOVER_SCRIPT = "/usr/local/bin/net-health-recovery.sh"


def test_net_health_recovery_script_skipped_with_its_unit(tmp_path: Path) -> None:
    """podman 4.9 on macOS (``useNetworkRecover``): the script only its unit runs, and the unit bounces
    Fedora's enp0s1; both are reported as 'ignore' with a reason and neither lands on FreeBSD."""
    res = run_fpvm("ignition", "show", str(NETRECOVER), "--json")
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    script = next(f for f in shown["files"] if f["path"] == NETRECOVER_SCRIPT)
    unit = next(u for u in shown["units"] if u["name"] == "net-health-recovery.service")
    assert script["disposition"] == unit["disposition"] == "ignore"
    assert script["notes"] == [
        "Linux-only: network recovery script of net-health-recovery.service (bounces Fedora's enp0s1)"
    ]
    assert any("enp0s1" in n and "Linux-only" in n for n in unit["notes"])

    res = run_fpvm("guest", "plan", "--config", str(NETRECOVER), "--json")
    assert res.returncode == 0, res.stderr
    planned = [a for a in json.loads(res.stdout) if "net-health-recovery" in json.dumps(a)]
    assert [(a["subject"], a["disposition"]) for a in planned] == [
        (f"file {NETRECOVER_SCRIPT}", "ignore"),
        ("net-health-recovery.service", "ignore"),
    ]
    assert "net-health-recovery.service" in planned[0]["note"]

    root = make_root(tmp_path)
    res = provision(root, NETRECOVER, tmp_path / "rec.jsonl")
    assert res.returncode == 0, res.stdout + res.stderr
    assert not (root / NETRECOVER_SCRIPT.lstrip("/")).exists()
    assert (root / "usr/local/bin/podman").exists()  # the folder itself is the image's, untouched


def _reasons(out: str) -> dict[str, list[str]]:
    """Each ``[mark] item`` line of ``show`` -> the indented lines under it."""
    items: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("  ["):
            current = items.setdefault(line, [])
        elif line.startswith("               ") and current is not None:
            current.append(line.strip())
        else:
            current = None
    return items


def test_show_explains_the_marks_once_and_gives_every_translate_a_reason(tmp_path: Path) -> None:
    cfg = minimal(
        passwd={
            "users": [
                {"name": "core", "uid": 1000, "groups": ["sudo"], "sshAuthorizedKeys": ["ssh-ed25519 AAAA k"]}
            ]
        },
        storage={
            "files": [{"path": "/etc/hostname", "contents": {"source": "data:,bsd"}}],
            "disks": [{"device": "/dev/vdb"}],
        },
        systemd={
            "units": [{"name": "podman.socket", "enabled": True}, {"name": "podman.service", "enabled": True}]
        },
        kernelArguments={"shouldExist": ["quiet"]},
    )
    configs = [write_config(tmp_path / "mixed.ign", cfg), PODMAN_CAPTURE / "machine.ign"]
    configs += sorted(PODMAN_IGNITION.glob("*.ign"))
    for path in configs:
        res = run_fpvm("ignition", "show", str(path))
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        assert lines[1:4] == [f"  {mark:9}  {meaning}" for mark, meaning in LEGEND]
        assert lines[2].startswith("  translate  done the FreeBSD way")
        assert sum("done as the config asks" in line for line in lines) == 1
        items = _reasons(res.stdout)
        assert items
        for item, reasons in items.items():
            if not item.startswith("  [apply"):
                assert reasons, f"{path}: no reason for {item}"
    items = _reasons(run_fpvm("ignition", "show", str(configs[0])).stdout)
    core = next(r for i, r in items.items() if i.startswith("  [translate] core uid 1000"))
    assert any("podman's rootless connection" in r for r in core)
    unit = items["  [translate] podman.socket (enabled)"]
    assert unit[0].startswith("podman API service: podman_service_enable")
    assert items["  [translate] podman.service (enabled)"]  # covered by podman.socket's rc.conf.d line
    hostname = items["  [translate] /etc/hostname  3 bytes"]
    assert hostname == ['rc.conf.d/hostname: hostname="bsd"  (/etc/hostname on Linux)']


def test_show_reads_standard_input() -> None:
    data = (PODMAN_CAPTURE / "machine.ign").read_bytes()
    res = run_fpvm("ignition", "show", "-", input=data, text=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().startswith("-: what a FreeBSD guest does with it\n")
    assert "[translate] podman.socket (enabled)" in res.stdout.decode()


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_file_same_exit_code_for_show_and_validate(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x.ign"
    if kind == "directory":
        path.mkdir()
    show = run_fpvm("ignition", "show", str(path))
    validate = run_fpvm("ignition", "validate", str(path))
    plan = run_fpvm("guest", "plan", "--config", str(path))
    reason = "No such file or directory" if kind == "missing" else "Is a directory"
    for res in (show, validate, plan):
        assert res.returncode == 2
        assert res.stderr == f"{path}: cannot read: {reason}\n"


def test_show_invalid_config_gives_a_plain_hint(tmp_path: Path) -> None:
    bad = tmp_path / "arr.ign"
    bad.write_text("[]")
    res = run_fpvm("ignition", "show", str(bad))
    assert res.returncode == 1
    assert "json: cannot unmarshal array into Go value of type util.versionStub" in res.stderr
    assert "    hint: the config must be a JSON object, not an array" in res.stderr.splitlines()
