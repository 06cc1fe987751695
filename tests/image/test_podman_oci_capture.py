"""What a real podman 5.8.2 pulled from an index made by `fpvm image package`, against fpvm's selection.

tests/fixtures/podman-5.8.2-oci-pull-capture/ (see its README) holds the index and manifests a loopback
registry served, and what podman-remote 5.8.2's ``machine init --image docker://127.0.0.1:PORT/fpvm:15.1
--tls-verify=false`` did with them on linux/amd64 (qemu provider): the manifest it picked (its debug log
and the registry's access log), the disk file name it read from that manifest, the cache file, the
blob it downloaded, the qcow2 it decompressed; and that an untagged reference asked for ``latest``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fpvm.machine import registry as reg
from fpvm_support import FIXTURES

CAPTURE = FIXTURES / "podman-5.8.2-oci-pull-capture"


def load(name: str) -> Any:
    return json.loads((CAPTURE / name).read_text(encoding="utf-8"))


def debug_values(lines: list[str], label: str) -> list[str]:
    r"""Values of podman's ``msg="<label>: …"`` debug lines (quotes inside are ``\"``)."""
    out = []
    for line in lines:
        m = re.search(re.escape(label) + r': (?:\\")?([^"\\]+)', line)
        if m:
            out.append(m.group(1))
    return out


def test_fpvm_selects_the_entry_podman_picked() -> None:
    index, capture = load("index.json"), load("capture.json")
    tagged = capture["tagged"]
    assert tagged["returncode"] == 0
    picked = set(debug_values(tagged["stderr_lines"], "found image in digest"))
    assert picked == {capture["picked"]["manifest_digest"]}
    # the registry saw the same: the index, then that manifest, then its one blob (and the empty config)
    digest = capture["picked"]["manifest_digest"]
    assert tagged["registry_requests"][1:3] == [
        "GET /v2/fpvm/manifests/15.1 200",
        f"GET /v2/fpvm/manifests/{digest} 200",
    ]
    entry = reg.select(index, "qemu", "amd64")
    assert entry is not None and entry["digest"] == digest
    assert entry["platform"] == {"architecture": "x86_64", "os": "linux"}
    assert entry["annotations"]["disktype"] == "qemu"


def test_the_picked_manifest_names_the_file_podman_decompressed() -> None:
    capture, manifests = load("capture.json"), load("manifests.json")
    picked = capture["picked"]
    layers = manifests[picked["manifest_digest"]]["layers"]
    assert len(layers) == 1  # podman: "podman-machine images should only have 1 layer"
    title = layers[0]["annotations"][reg.TITLE]
    names = set(debug_values(capture["tagged"]["stderr_lines"], "original artifact file name"))
    assert names == {title} == {picked["original_file_name"]} == {"fpvm-15.1-RELEASE-qemu.x86_64.qcow2.zst"}
    assert f"GET /v2/fpvm/blobs/{layers[0]['digest']} 200" in capture["tagged"]["registry_requests"]
    # podman's cache file: the manifest's digest, then the format and compression from the title
    assert picked["cached_file"].endswith(f"/cache/{picked['manifest_digest'].split(':')[1]}.qcow2.zst")
    assert any(picked["cached_file"] in line for line in capture["tagged"]["stderr_lines"])
    # ... decompressed to the machine's qcow2: the guest sees the source disk, then zeros to the new size
    check = picked["machine_disk_check"]
    assert check["format"] == "qcow2" and check["virtual_size"] == 1 << 30  # `--disk-size 1`: resized
    assert check["prefix_equals_source_raw"] and check["rest_is_zero"]


def test_untagged_reference_means_latest_for_podman_and_fpvm() -> None:
    """podman appends its own major.minor only to its default image; ``docker://HOST/NAME`` is ``latest``."""
    untagged = load("capture.json")["untagged"]
    assert untagged["returncode"] == 125
    assert "127.0.0.1:$PORT/fpvm:latest" in untagged["stdout"]
    assert untagged["registry_requests"][-1] == "GET /v2/fpvm/manifests/latest 404"
    assert reg.parse_reference("docker://127.0.0.1:5000/fpvm").tag == "latest"


def test_the_index_is_fpvms_shape_for_every_disk() -> None:
    """The captured index is what `fpvm image package` writes: one entry per disk type and arch."""
    index, manifests = load("index.json"), load("manifests.json")
    assert index["mediaType"] == reg.INDEX_MEDIA_TYPE
    seen = {(e["annotations"]["disktype"], e["platform"]["architecture"]) for e in index["manifests"]}
    assert seen == {("qemu", "x86_64"), ("qemu", "aarch64"), ("applehv", "x86_64"), ("applehv", "aarch64")}
    for arch, podman_arch in (("amd64", "x86_64"), ("aarch64", "aarch64")):
        entry = reg.select(index, "qemu", arch)
        assert entry is not None
        title = manifests[entry["digest"]]["layers"][0]["annotations"][reg.TITLE]
        assert title == f"fpvm-15.1-RELEASE-qemu.{podman_arch}.qcow2.zst"
