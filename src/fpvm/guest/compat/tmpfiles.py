"""``systemd-tmpfiles --create``: podman's docker.sock link, the one tmpfiles line it writes itself.

After ``podman machine set --rootful/--rootless`` podman 4.9+/5.x writes
``/etc/tmpfiles.d/podman-docker.conf`` = ``L+  /run/docker.sock - - - - <socket>`` and runs
``systemd-tmpfiles --create --prefix=/run/docker.sock`` (failures are only warnings for podman).
Here the ``L``/``L+`` lines of ``/etc/tmpfiles.d/*.conf`` become symlinks; ``/run`` is ``/var/run``
on FreeBSD (the image links it). Other line types are Linux boot-time housekeeping: logged, skipped.
The agent runs the same ``create`` at every boot (``fpvm.guest.storage.TmpfilesCreate``), as
systemd-tmpfiles-setup.service does on Linux: FreeBSD's cleanvar empties /var/run at boot.
"""

from __future__ import annotations

import shlex

from fpvm.fsutil import read_regular
from fpvm.guest.compat.base import Shim, os_error_text
from fpvm.guest.rootfs import UnsafePathError

TMPFILES_D = "/etc/tmpfiles.d"
MAX_CONF = 1024 * 1024  # bytes of one tmpfiles.d file read (podman's is one line)
MAX_CONFS = 1000  # *.conf files looked at in /etc/tmpfiles.d


def freebsd_path(path: str) -> str:
    """``/run/...`` -> ``/var/run/...`` (works whether or not the ``/run`` link exists yet)."""
    return "/var/run" + path[4:] if path == "/run" or path.startswith("/run/") else path


def matches(path: str, prefixes: list[str], excludes: list[str]) -> bool:
    def under(p: str) -> bool:
        p = p.rstrip("/") or "/"
        return path == p or path.startswith(p.rstrip("/") + "/")

    if prefixes and not any(under(p) for p in prefixes):
        return False
    return not any(under(p) for p in excludes)


def run(shim: Shim, args: list[str]) -> int:
    create = False
    prefixes: list[str] = []
    excludes: list[str] = []
    files: list[str] = []
    it = iter(args)
    for a in it:
        if a == "--create":
            create = True
        elif a.startswith("--prefix="):
            prefixes.append(a.split("=", 1)[1])
        elif a == "--prefix":
            prefixes.append(next(it, ""))
        elif a.startswith("--exclude-prefix="):
            excludes.append(a.split("=", 1)[1])
        elif a.startswith("-"):
            shim.info(f"ignored option {a}")
        else:
            files.append(a)
    if not create:
        shim.note(f"{' '.join(args) or '(no action)'}: only --create is done on FreeBSD")
        return 0
    return create_links(shim, prefixes, excludes, files)[0]


def create_links(
    shim: Shim, prefixes: list[str], excludes: list[str], files: list[str]
) -> tuple[int, list[str]]:
    """``--create``: (exit status, links changed); ``files`` empty = every ``/etc/tmpfiles.d/*.conf``."""
    changed: list[str] = []
    if files:
        paths = files
    else:
        try:
            host_dir = shim.root.host(TMPFILES_D, follow_last=True)
        except UnsafePathError as exc:
            return shim.error(str(exc)), changed
        try:
            names = sorted(p.name for p in host_dir.glob("*.conf")) if host_dir.is_dir() else []
        except OSError as exc:
            return shim.error(f"{TMPFILES_D}: {os_error_text(exc)}"), changed
        if len(names) > MAX_CONFS:
            shim.note(f"{TMPFILES_D}: {len(names)} files; only the first {MAX_CONFS} are read")
        paths = [f"{TMPFILES_D}/{n}" for n in names[:MAX_CONFS]]
    status = 0
    for conf in paths:
        try:
            # Bounded, and never a FIFO or device (/dev/zero would be read until memory runs out).
            raw = read_regular(shim.root.host_str(conf, follow_last=True), MAX_CONF)
            text = raw.decode("utf-8", "replace")
        except FileNotFoundError:
            status = shim.error(f"{conf}: No such file")
            continue
        except UnsafePathError as exc:
            status = shim.error(f"{conf}: {exc}")
            continue
        except OSError as exc:
            status = shim.error(f"{conf}: {exc.strerror if exc.filename else exc}")
            continue
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                fields = shlex.split(line)
            except ValueError as exc:
                shim.note(f"{conf}:{lineno}: cannot parse ({exc}); skipped")
                continue
            kind, path = fields[0], fields[1] if len(fields) > 1 else ""
            if not path or not matches(path, prefixes, excludes):
                continue
            if kind.rstrip("!-") not in ("L", "L+") or len(fields) < 7:
                shim.info(f"{conf}:{lineno}: {kind} {path}: Linux-only, skipped")
                continue
            target = fields[6]
            link = freebsd_path(path)
            try:
                if kind.rstrip("!-") == "L" and shim.root.lstat(link) is not None:
                    shim.info(f"{conf}:{lineno}: {link} exists, left as it is (L)")
                    continue
                if shim.root.symlink(link, target):
                    changed.append(link)
            except (UnsafePathError, OSError) as exc:
                status = shim.error(f"{conf}:{lineno}: cannot link {link} -> {target}: {exc}")
                continue
            shim.info(f"linked {link} -> {target}")
    return status, changed
