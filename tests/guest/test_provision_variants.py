"""podman configs the fixtures do not cover, assembled from the research notes (B-podman-machine §1):
``--username``, uid 0, Hyper-V's extra files and units, SSL certificates, ``--playbook``, ``--swap``,
the 4.9 macOS network-recovery script, and an ``/etc/hostname``."""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

from guest_support import make_root, provision, recorded, snapshot, write_config
from guest_synopsis import check_pw_argv

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIY13ql7ogiegYHHFbAKgAnlG//v6FRNqeCt518RJC8p me@mac"


def _f(path: str, text: str, mode: int = 420, owner: str | None = "root", **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "path": path,
        "mode": mode,
        "contents": {"source": "data:," + urllib.parse.quote(text)},
    }
    if owner is not None:
        node["user"] = {"name": owner}
        node["group"] = {"name": owner}
    node.update(extra)
    return node


def username_hyperv_config() -> dict[str, Any]:
    user = "alice"
    return {
        "ignition": {"version": "3.2.0"},
        "passwd": {
            "users": [
                {"name": "core", "shouldExist": False},
                {
                    "name": user,
                    "uid": 1000,
                    "groups": ["sudo", "adm", "wheel", "systemd-journal"],
                    "sshAuthorizedKeys": [KEY],
                },
                {"name": "root", "sshAuthorizedKeys": [KEY]},
            ]
        },
        "storage": {
            "directories": [
                {
                    "path": f"/home/{user}/.config",
                    "mode": 493,
                    "user": {"name": user},
                    "group": {"name": user},
                },
                {
                    "path": f"/home/{user}/.config/containers",
                    "mode": 493,
                    "user": {"name": user},
                    "group": {"name": user},
                },
            ],
            "files": [
                _f(
                    f"/home/{user}/.config/containers/containers.conf",
                    '[containers]\nnetns="bridge"\npids_limit=0\n',
                    484,
                    user,
                ),
                _f("/etc/subuid", f"{user}:100000:1000000\n", 484, overwrite=True),
                _f("/etc/containers/podman-machine", "hyperv\n"),
                _f(
                    "/etc/containers/certs.d/registry.example:5000/ca.crt", "-----BEGIN CERTIFICATE-----\nx\n"
                ),
                _f(
                    "/etc/profile.d/podman-machine-ssl.sh",
                    'export SSL_CERT_FILE="/etc/containers/certs.d/ca.crt"\n',
                ),
                _f("/etc/systemd/system.conf.d/podman-machine-ssl.conf", "[Manager]\n"),
                _f("/etc/environment.d/podman-machine-ssl.conf", "SSL_CERT_FILE=x\n"),
                _f("/etc/systemd/zram-generator.conf", "[zram0]\nzram-size=2048\n"),
                _f("/etc/NetworkManager/system-connections/vsock0.nmconnection", "[connection]\n", 384),
                _f(f"/home/{user}/playbook.yaml", "- hosts: localhost\n", 484, user),
                _f("/usr/local/bin/net-health-recovery.sh", "#!/bin/bash\ntrue\n", 493),
                _f("/etc/hostname", "podman-machine-default\n"),
                _f(
                    "/etc/tmpfiles.d/podman-docker.conf",
                    "L+ /run/docker.sock - - - - /run/user/1000/podman/podman.sock\n",
                    owner=None,
                    user={},
                    group={},
                ),
            ],
            "links": [
                {
                    "path": "/usr/local/bin/docker",
                    "target": "/usr/bin/podman",
                    "overwrite": True,
                    "user": {"name": "root"},
                    "group": {"name": "root"},
                },
                {
                    "path": "/etc/localtime",
                    "target": "../usr/share/zoneinfo/Europe/London",
                    "overwrite": False,
                },
            ],
        },
        "systemd": {
            "units": [
                {"name": "podman.socket", "enabled": True},
                {"name": "ready.service", "enabled": True, "contents": "[Unit]\n"},
                {"name": "vsock-network.service", "enabled": True, "contents": "[Service]\n"},
                {"name": "playbook.service", "enabled": True, "contents": "[Service]\n"},
                {"name": "zincati.service", "enabled": False},
            ]
        },
    }


def test_username_variant_through_the_cli(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    master = root / "etc/master.passwd"  # an image that already has podman's default user
    master.write_text(master.read_text() + "core:*:1001:1001::0:0::/home/core:/bin/sh\n")
    (root / "etc/group").write_text((root / "etc/group").read_text() + "core:*:1001:\n")
    conf = write_config(tmp_path / "c.ign", username_hyperv_config())
    rec = tmp_path / "rec.jsonl"
    res = provision(root, conf, rec)
    assert res.returncode == 0, res.stdout + res.stderr
    pw = [c for c in recorded(rec) if c[0] == "pw"]
    for c in pw:
        check_pw_argv(c, str(root))
    assert pw[0][3:] == ["userdel", "-n", "core"]
    opts = check_pw_argv(pw[1], str(root))
    assert pw[1][3] == "useradd" and opts["-n"] == "alice" and opts["-u"] == "1000"
    assert opts["-G"] == "wheel,operator"
    assert "core:" not in master.read_text()
    assert (root / "usr/home/alice/.ssh/authorized_keys").read_text() == KEY + "\n"
    assert (root / "usr/local/etc/sudoers.d/fpvm-podman").read_text().splitlines()[1:] == [
        "alice ALL=(ALL:ALL) NOPASSWD: ALL"
    ]
    # files: translated, applied or skipped
    assert (root / "usr/local/etc/containers/certs.d/registry.example:5000/ca.crt").exists()
    assert (root / "etc/containers/podman-machine").read_text() == "hyperv\n"
    assert (root / "usr/home/alice/playbook.yaml").exists()
    # podman 4.9's enp0s1 recovery script is skipped together with its unit (Linux-only)
    assert not (root / "usr/local/bin/net-health-recovery.sh").exists()
    assert (root / "etc/profile.d/podman-machine-ssl.sh").exists()
    for linux in ("etc/systemd", "etc/environment.d", "etc/NetworkManager"):
        assert not (root / linux).exists(), linux
    assert os.readlink(root / "var/run/docker.sock") == "/run/user/1000/podman/podman.sock"
    assert (root / "etc/rc.conf.d/hostname").read_text() == 'hostname="podman-machine-default"\n'
    assert os.readlink(root / "etc/localtime") == "../usr/share/zoneinfo/Europe/London"
    # and again: nothing changes, no pw command
    before = snapshot(root)
    n = len(recorded(rec))
    again = provision(root, conf, rec)
    assert again.returncode == 0 and snapshot(root) == before
    assert [c for c in recorded(rec)[n:] if c[0] == "pw"] == []


def test_uid_zero_from_a_root_podman(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    cfg = {
        "ignition": {"version": "3.2.0"},
        "passwd": {"users": [{"name": "core", "uid": 0, "sshAuthorizedKeys": [KEY]}]},
    }
    conf = write_config(tmp_path / "c.ign", cfg)
    rec = tmp_path / "rec.jsonl"
    res = provision(root, conf, rec)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "already belongs to root" in (root / "var/log/fpvm.log").read_text()
    useradd = next(c for c in recorded(rec) if c[3] == "useradd")
    assert "-u" not in check_pw_argv(useradd, str(root))
    line = next(x for x in (root / "etc/master.passwd").read_text().splitlines() if x.startswith("core:"))
    assert line.split(":")[2] == "1000"
    report = json.loads((root / "var/db/fpvm/last-boot.json").read_text())
    assert report["commands"][0] == useradd
