"""builder-vm downloads against a real HTTP server on 127.0.0.1 serving a stand-in image and checksum."""

from __future__ import annotations

import hashlib
import http.server
import lzma
import threading
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from fpvm import arch as archmod
from fpvm.image import builder_vm, download, recipe
from fpvm.image.plan import BuildError
from fpvm_runner import fpvm_main

RELEASE = "15.1-RELEASE"


class _Handler(http.server.SimpleHTTPRequestHandler):
    hits: Counter[str]

    def do_GET(self) -> None:
        self.hits[self.path] += 1
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


class Mirror:
    """A FreeBSD download site in miniature: releases/VM-IMAGES/<release>/<arch>/Latest/."""

    def __init__(self, root: Path, server: http.server.ThreadingHTTPServer, hits: Counter[str]) -> None:
        self.root = root
        self.server = server
        self.hits = hits
        self.url = f"http://127.0.0.1:{server.server_address[1]}"

    def publish(self, arch: str, payload: bytes, checksum: str | None = None) -> tuple[str, bytes]:
        r = recipe.Recipe(release=recipe.parse_release(RELEASE), arch=arch, method="builder-vm")
        name = builder_vm.image_file_name(r, arch)
        directory = self.root / f"releases/VM-IMAGES/{RELEASE}/{arch}/Latest"
        directory.mkdir(parents=True, exist_ok=True)
        data = lzma.compress(payload, format=lzma.FORMAT_XZ)
        (directory / name).write_bytes(data)
        digest = checksum or hashlib.sha256(data).hexdigest()
        (directory / "CHECKSUM.SHA256").write_text(
            f"SHA256 (FreeBSD-{RELEASE}-{arch}-other.qcow2.xz) = {'0' * 64}\nSHA256 ({name}) = {digest}\n"
        )
        return name, data


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    root = tmp_path / "www"
    root.mkdir()
    hits: Counter[str] = Counter()
    handler = partial(type("H", (_Handler,), {"hits": hits}), directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Mirror(root, server, hits)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _fetch_steps(mirror: Mirror, tmp_path: Path, arch: str) -> list[object]:
    r = recipe.Recipe(
        release=recipe.parse_release(RELEASE), arch=arch, method="builder-vm", mirror=mirror.url
    )
    steps = builder_vm.plan_steps(
        r,
        tmp_path / "work",
        tmp_path / "cache",
        tmp_path / "image.raw",
        tmp_path / "serial.log",
        None,
        builder_arch=arch,
        accel="tcg",
        status=False,
    )
    return [s for s in steps if s.title in ("download the builder image", "unpack the builder image")]


def test_parse_checksums_bsd_and_gnu() -> None:
    sums = download.parse_checksums(f"SHA256 (a.raw.xz) = {'A' * 64}\n{'b' * 64}  b.img\njunk\n")
    assert sums == {"a.raw.xz": "a" * 64, "b.img": "b" * 64}


@pytest.mark.parametrize("arch", ["amd64", "aarch64"])
def test_download_verify_unpack_and_cache_hit(mirror: Mirror, tmp_path: Path, arch: str) -> None:
    payload = b"\0" * (3 << 20) + b"FreeBSD stand-in disk" + b"\0" * 4096
    name, data = mirror.publish(arch, payload)
    for step in _fetch_steps(mirror, tmp_path, arch):
        step.action()  # type: ignore[attr-defined]
    cache = tmp_path / "cache"
    assert (cache / name).read_bytes() == data
    assert (cache / name.removesuffix(".xz")).read_bytes() == payload
    image_path = f"/releases/VM-IMAGES/{RELEASE}/{arch}/Latest/{name}"
    assert mirror.hits[image_path] == 1
    # Second run: the checksum is fetched again, the image comes from the cache.
    for step in _fetch_steps(mirror, tmp_path, arch):
        step.action()  # type: ignore[attr-defined]
    assert mirror.hits[image_path] == 1
    assert mirror.hits[f"/releases/VM-IMAGES/{RELEASE}/{arch}/Latest/CHECKSUM.SHA256"] == 2
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith("CHECKSUM")) == sorted(
        [name, name.removesuffix(".xz")]
    )


def test_checksum_mismatch_keeps_nothing(mirror: Mirror, tmp_path: Path) -> None:
    mirror.publish("amd64", b"tampered", checksum="1" * 64)
    fetch = _fetch_steps(mirror, tmp_path, "amd64")[0]
    with pytest.raises(BuildError, match=r"checksum mismatch .* expected 1{64}"):
        fetch.action()  # type: ignore[attr-defined]
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith("CHECKSUM")] == []


def test_stale_cached_image_is_replaced(mirror: Mirror, tmp_path: Path) -> None:
    name, data = mirror.publish("amd64", b"new image")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / name).write_bytes(b"old image")
    _fetch_steps(mirror, tmp_path, "amd64")[0].action()  # type: ignore[attr-defined]
    assert (cache / name).read_bytes() == data


def test_missing_file_is_one_clear_message(mirror: Mirror, tmp_path: Path) -> None:
    with pytest.raises(
        BuildError, match=r"cannot download http://127\.0\.0\.1:\d+/.*CHECKSUM\.SHA256: HTTP 404"
    ):
        _fetch_steps(mirror, tmp_path, "amd64")[0].action()  # type: ignore[attr-defined]


def test_build_with_bad_checksum_fails_cleanly(mirror: Mirror, tmp_path: Path) -> None:
    """The whole command: one message, exit 1, no image, no leftover work directory, nothing cached."""
    host = archmod.host()
    mirror.publish(host, b"tampered", checksum="2" * 64)
    out = tmp_path / "out"
    status, _, stderr = fpvm_main(
        "build",
        "--method",
        "builder-vm",
        "--arch",
        "aarch64",
        "--mirror",
        mirror.url,
        "--output-dir",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--image-size",
        "2g",
    )
    assert status == 1, stderr
    assert "fpvm build: error: checksum mismatch" in stderr
    assert "Traceback" not in stderr
    assert list(out.iterdir()) == []
    assert [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith("CHECKSUM")] == []


def test_no_space_is_one_clear_message(tmp_path: Path) -> None:
    with pytest.raises(
        BuildError, match=r"not enough free space in .*: the build needs about 1048576\.0 GiB"
    ):
        builder_vm.check_space(tmp_path, 1 << 50)


def test_no_qemu_is_one_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no QEMU anywhere
    r = recipe.Recipe(release=recipe.parse_release(RELEASE), arch="amd64", method="builder-vm")
    with pytest.raises(BuildError, match="qemu-system-x86_64 is not installed"):
        builder_vm.check_host(r, "amd64", tmp_path, tmp_path)


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert download.default_cache_dir() == tmp_path / "fpvm"
