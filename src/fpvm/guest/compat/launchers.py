"""The thin launcher scripts the image installs in ``/usr/local/libexec/fpvm/linux-compat``.

Each is a two-line ``sh`` script that hands its arguments, untouched, to ``fpvm guest shim NAME``;
the image build writes them (``fpvm.image.overlay``) and puts the directory first on sudo's
secure_path and root's PATH, so that podman's ``sudo mount ...`` reaches fpvm instead of /sbin/mount.
"""

from __future__ import annotations

LAUNCHER_DIR = "/usr/local/libexec/fpvm/linux-compat"
FPVM = "/usr/local/bin/fpvm"
# The command names podman runs; kept here (not imported from the package) so this module stands alone.
NAMES = ("chattr", "mount", "systemctl", "systemd-tmpfiles")


def launchers(fpvm: str = FPVM) -> dict[str, str]:
    """The text of each launcher script for ``LAUNCHER_DIR/<name>`` (mode 0755 in the image).

    ``fpvm`` is the agent's command path in the image; tests pass another to run the same text.
    """
    return {
        name: "#!/bin/sh\n"
        f"# fpvm linux-compat: podman runs `{name}` in its guest; do it the FreeBSD way.\n"
        f'exec {fpvm} guest shim {name} "$@"\n'
        for name in NAMES
    }
