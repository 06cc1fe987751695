"""Passwordless sudo for podman's machine user, in ``/usr/local/etc/sudoers.d/``.

podman runs ``sudo mount ...``, ``sudo chattr ...`` as its user over ssh with no terminal, so a
password prompt would hang the machine start. FCOS gets this from ``wheel``; FreeBSD's sudo port
ships its sudoers with the ``%wheel NOPASSWD`` line commented out, so the agent writes one small
file naming the config's accounts (root aside): each is one podman logs in as. sudo ignores files
in sudoers.d whose name contains a ``.`` or ends in ``~``, hence the plain name. Mode 0440
root:wheel, as visudo expects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fpvm.guest.actions import Action

if TYPE_CHECKING:
    from fpvm.guest.context import ApplyContext

SUDOERS_FILE = "/usr/local/etc/sudoers.d/fpvm-podman"


class SudoersFile(Action):
    kind = "sudoers"

    def __init__(self, users: list[str], path: str = SUDOERS_FILE, source: str = "") -> None:
        super().__init__(source, "translate", "FCOS grants this through wheel")
        self.users = users
        self.path = path

    def describe(self) -> str:
        return f"passwordless sudo for {', '.join(self.users)} in {self.path}"

    def fields(self) -> dict[str, Any]:
        return {"users": self.users, "path": self.path}

    def apply(self, ctx: ApplyContext) -> bool:
        lines = ["# Written by fpvm from the machine's Ignition config: podman runs sudo without a terminal."]
        lines += [f"{u} ALL=(ALL:ALL) NOPASSWD: ALL" for u in self.users]
        return ctx.root.write(self.path, ("\n".join(lines) + "\n").encode(), 0o440, 0, 0)
