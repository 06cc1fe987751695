"""fpvm.contract: what the host writes, the guest reads back, through the same names and rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fpvm import contract
from fpvm.guest import mounts, rcd
from fpvm.guest.rootfs import RootFS
from fpvm.ignition import parse
from fpvm.machine import ignition as machine_ignition
from fpvm.machine.errors import MachineError
from fpvm.machine.state import Volume


def test_mount_table_round_trip() -> None:
    entries = [("fpvm0", "/Users/me/src", False), ("fpvm1", "/opt/data", True)]
    text = contract.encode_mounts(entries)
    assert json.loads(text) == {
        "mounts": [
            {"tag": "fpvm0", "target": "/Users/me/src", "readonly": False},
            {"tag": "fpvm1", "target": "/opt/data", "readonly": True},
        ]
    }
    assert text.endswith("}\n") and text.startswith('{\n  "mounts": [')
    assert contract.decode_mounts(text.encode()) == entries


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (("fpvm0", "/Users/me/My Files", False), r"\$\.mounts\[0\]: .*contains a space"),
        (("fpvm0", "relative/dir", False), r"\$\.mounts\[0\]: .*not an absolute path"),
        (("fpvm0", "/", False), r"\$\.mounts\[0\]: refusing to mount over /"),
        (("fpvm0", "/a//b/", False), r"\$\.mounts\[0\]: .*not in its normal form"),
        (("bad tag", "/srv", False), r"\$\.mounts\[0\]: tag 'bad tag'"),
    ],
)
def test_encoder_refuses_what_the_guest_refuses(entry: tuple[str, str, bool], message: str) -> None:
    with pytest.raises(contract.MountError, match=message):
        contract.encode_mounts([entry])
    # The guest, given the same entry by hand, refuses it too (the normal-form case: it normalises).
    raw = json.dumps({"mounts": [dict(zip(contract.MOUNT_KEYS, entry, strict=True))]}).encode()
    if entry[1] == "/a//b/":
        assert contract.decode_mounts(raw) == [("fpvm0", "/a/b", False)]
    else:
        with pytest.raises(contract.MountError, match=r"\$\.mounts\[0\]"):
            contract.decode_mounts(raw)


def test_machine_table_is_what_the_guest_mounts(tmp_path: Path) -> None:
    """The host's Ignition (fpvm.machine.ignition) read by the guest's mount step (fpvm.guest.mounts)."""
    volumes = [
        Volume(source="/home/me/src", target="/home/me/src", readonly=False, tag=contract.volume_tag(0)),
        Volume(source="/srv/data", target="/mnt/data", readonly=True, tag=contract.volume_tag(1)),
    ]
    data = machine_ignition.render(machine_ignition.build("ssh-ed25519 AAAA test", 501, volumes, None))
    plan = mounts.plan_mounts(parse(data), RootFS(str(tmp_path)))
    got = [(a.req.tag, a.req.target, a.req.readonly) for a in plan if isinstance(a, mounts.MountAction)]
    assert got == [("fpvm0", "/home/me/src", False), ("fpvm1", "/mnt/data", True)]


def test_machine_refuses_a_volume_the_guest_would_refuse() -> None:
    bad = Volume(source="/src", target="/has space", readonly=False, tag="fpvm0")
    with pytest.raises(MachineError, match=re.escape(contract.MOUNTS_PATH) + r": \$\.mounts\[0\]"):
        machine_ignition.mounts_table([bad])


def test_ready_script_default_port_is_the_contracts() -> None:
    text = rcd.script_text("fpvm_ready").decode()
    found = re.search(r'^: \$\{fpvm_ready_port:="([^"]+)"\}$', text, re.M)
    assert found, "fpvm_ready sets no default port"
    assert found.group(1) == contract.READY_DEVICE == f"/dev/vtcon/{contract.READY_PORT}"


def test_socket_paths() -> None:
    assert contract.user_api_socket(501) == "/var/run/user/501/podman/podman.sock"
    assert contract.run_user_api_socket(501) == "/run/user/501/podman/podman.sock"
    # /run is a link to /var/run in the image: podman's path and the guest's are the same socket.
    assert contract.RUN_API_SOCKET.replace("/run/", "/var/run/", 1) == contract.API_SOCKET
    assert contract.run_user_api_socket(7).replace("/run/", "/var/run/", 1) == contract.user_api_socket(7)


def test_podman_helpers_cut_9p_tags_where_the_guest_matches_them() -> None:
    """The standalone podman 5 helper may not import fpvm: its copy of the limit must be the contract's."""
    from fpvm.machine import podman_helper_main

    assert podman_helper_main.MAX_9P_TAG == contract.MAX_9P_TAG == 31
