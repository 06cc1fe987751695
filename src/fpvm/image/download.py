"""Downloads with a cache, a progress bar, and a checksum that must match before anything is kept.

FreeBSD publishes ``CHECKSUM.SHA256`` next to its VM images, in BSD form
(``SHA256 (FreeBSD-15.1-RELEASE-amd64-BASIC-CLOUDINIT-ufs.raw.xz) = <hex>``); the GNU form
(``<hex>  name``) is read too. A download goes to a temporary file in the cache, is hashed while it
arrives, and is renamed into place only when the hash matches; on a mismatch nothing is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from fpvm.fsutil import atomic_write, fsync_dir, sha256_file
from fpvm.image.plan import BuildError
from fpvm.progress import progress

_BSD = re.compile(r"^SHA256 \((?P<name>[^)]+)\) = (?P<hex>[0-9a-fA-F]{64})$")
_GNU = re.compile(r"^(?P<hex>[0-9a-fA-F]{64}) [ *](?P<name>.+)$")
_CHUNK = 1 << 20
TIMEOUT = 60


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fpvm"


def parse_checksums(text: str) -> dict[str, str]:
    """File name -> lowercase sha256 hex, from a CHECKSUM.SHA256 file (BSD or GNU lines)."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        match = _BSD.match(line) or _GNU.match(line)
        if match:
            sums[match["name"].strip()] = match["hex"].lower()
    return sums


def fetch_bytes(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return bytes(response.read())
    except (urllib.error.URLError, OSError) as exc:
        raise BuildError(f"cannot download {url}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc)


def expected_sha256(checksum_url: str, name: str, cache_dir: Path) -> str:
    """The published sha256 of ``name``. The checksum file is cached for offline rebuilds."""
    cached = cache_dir / checksum_url.rsplit("/", 1)[-1]
    cached = cached.with_name(f"{cached.name}.{hashlib.sha256(checksum_url.encode()).hexdigest()[:12]}")
    try:
        text = fetch_bytes(checksum_url).decode("utf-8", "replace")
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(cached, text.encode())
    except BuildError:
        if not cached.is_file():
            raise
        text = cached.read_text()
    sums = parse_checksums(text)
    if name not in sums:
        raise BuildError(f"{checksum_url} lists no checksum for {name}")
    return sums[name]



def download(url: str, dest: Path, sha256: str, show_progress: bool = True) -> bool:
    """Make ``dest`` hold ``url``'s bytes with the given sha256; returns False on a cache hit.

    On a checksum mismatch or a broken transfer nothing is left behind (a cached file that no longer
    matches is removed too, so the next run downloads it again).
    """
    if dest.is_file():
        if sha256_file(dest) == sha256:
            return False
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response, tmp.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress(dest.name, total, show_progress) as advance:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    advance(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != sha256:
            raise BuildError(
                f"checksum mismatch for {url}: expected {sha256}, got {got}; the download was discarded"
            )
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        return True
    except (urllib.error.URLError, OSError) as exc:
        raise BuildError(f"cannot download {url}: {_reason(exc)}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
