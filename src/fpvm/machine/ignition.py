"""The Ignition config fpvm hands its guest, shaped like the one ``podman machine init`` writes.

Using podman's shape (spec 3.2.0, ``data:,`` URLs, decimal modes, users ``core`` + ``root``) means the
guest agent has a single input format whether podman or fpvm started the VM. fpvm adds one file of
its own, the mount table ``/usr/local/etc/fpvm/mounts.json``, because its volumes are 9p devices the
guest mounts itself at boot (podman 4.x mounted them over ssh after Ready).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from fpvm.contract import MOUNTS_PATH, MountError, encode_mounts
from fpvm.ignition import dataurl
from fpvm.machine.errors import MachineError
from fpvm.machine.state import Volume

SPEC_VERSION = "3.2.0"
MARKER_PATH = "/etc/containers/podman-machine"
# The guest's podman reads the marker's content as the provider name; "qemu" is what 4.x always wrote
# and makes podman publish container ports to gvproxy when gvproxy is in use.
MARKER_CONTENT = "qemu\n"
REGISTRIES_PATH = "/etc/containers/registries.conf.d/999-podman-machine.conf"
REGISTRIES_CONTENT = 'unqualified-search-registries=["docker.io"]\n'


def make_key(path: Path, comment: str) -> str:
    """Create an ed25519 key pair at ``path`` with ssh-keygen; return the public key line.

    ``comment`` is given by the caller (``fpvm-NAME``) rather than taken from the folder: init builds
    the machine in a temporary folder, and the comment ends up in the guest's authorized_keys.
    """
    try:
        result = subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-N",
                "",
                "-t",
                "ed25519",
                "-C",
                comment,
                "-f",
                str(path),
            ],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise MachineError("ssh-keygen not found: install OpenSSH (it ships with macOS)") from None
    if result.returncode != 0:
        raise MachineError(f"ssh-keygen failed: {result.stderr.strip()}")
    return Path(f"{path}.pub").read_text().strip()


def host_timezone(localtime: str = "/etc/localtime") -> str | None:
    """The host's zone name (``Europe/Paris``), or None when it cannot be told.

    ``$TZ`` first (when it is a zone name, not a POSIX rule), then the target of the ``/etc/localtime``
    link, read one hop only: macOS links to ``/var/db/timezone/zoneinfo/Area/City``, where
    ``zoneinfo`` is itself a link into a versioned directory that a full resolution would expose.
    """
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and "/" in tz and not tz.startswith("/") and ".." not in tz:
        return tz
    try:
        target = os.readlink(localtime)
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        zone = target.split("zoneinfo/", 1)[1].removeprefix("posix/").removeprefix("right/")
        return zone or None
    try:
        zone = Path("/etc/timezone").read_text().strip()  # Debian without the link
    except OSError:
        return None
    return zone or None


def mounts_table(volumes: list[Volume]) -> str:
    """The guest's mount table (``fpvm.contract.encode_mounts``): tag, target, readonly per volume."""
    try:
        return encode_mounts((v.tag, v.target, v.readonly) for v in volumes)
    except MountError as exc:
        raise MachineError(f"{MOUNTS_PATH}: {exc}") from None


def _file(path: str, content: str, mode: int = 0o644, overwrite: bool = True) -> dict[str, Any]:
    return {
        "group": {"name": "root"},
        "overwrite": overwrite,
        "path": path,
        "user": {"name": "root"},
        "contents": {"source": dataurl.encode(content), "verification": {}},
        "mode": mode,
    }


def build(pubkey: str, uid: int, volumes: list[Volume], timezone: str | None) -> dict[str, Any]:
    """The config as a JSON object; ``render`` gives the bytes that go into fw_cfg."""
    links: list[dict[str, Any]] = [
        {
            "group": {"name": "root"},
            "overwrite": True,
            "path": "/usr/local/bin/docker",
            "user": {"name": "root"},
            "target": "/usr/local/bin/podman",
        }
    ]
    if timezone:
        links.append(
            {
                "group": {"name": "root"},
                "overwrite": True,
                "path": "/etc/localtime",
                "user": {"name": "root"},
                "target": f"/usr/share/zoneinfo/{timezone}",
            }
        )
    mounts = mounts_table(volumes)
    return {
        "ignition": {
            "config": {"replace": {"verification": {}}},
            "proxy": {},
            "security": {"tls": {}},
            "timeouts": {},
            "version": SPEC_VERSION,
        },
        "passwd": {
            "users": [
                {"name": "core", "sshAuthorizedKeys": [pubkey], "uid": uid},
                {"name": "root", "sshAuthorizedKeys": [pubkey]},
            ]
        },
        "storage": {
            "directories": [
                {
                    "group": {"name": "root"},
                    "path": "/usr/local/etc/fpvm",
                    "user": {"name": "root"},
                    "mode": 0o755,
                }
            ],
            "files": [
                _file(MARKER_PATH, MARKER_CONTENT),
                _file(REGISTRIES_PATH, REGISTRIES_CONTENT),
                _file(MOUNTS_PATH, mounts),
            ],
            "links": links,
        },
        "systemd": {"units": [{"enabled": True, "name": "podman.socket"}]},
    }


def render(config: dict[str, Any]) -> bytes:
    """Compact JSON, like podman's ``json.Marshal``: the bytes are what the guest reads from fw_cfg."""
    return json.dumps(config, separators=(",", ":")).encode()
