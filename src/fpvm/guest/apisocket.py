"""podman's API socket where podman's host side looks for it.

FreeBSD's podman serves its API at ``/var/run/podman/podman.sock`` (``registry_freebsd.go``); the
``podman_service`` rc script creates ``/var/run/podman`` (``install -d`` with
``podman_service_api_user``/``_api_group``/``_api_mode``, by default root, operator, 0770) and, once
the socket exists, gives it that owner and mode. podman's host side (gvproxy's ``-forward-dest``, the
system connections) uses Linux paths instead:

* rootful: ``/run/podman/podman.sock`` as root. FreeBSD has no ``/run``; the image makes ``/run`` a
  link to ``var/run`` and the agent re-creates it on every boot if it is missing. The link is relative
  so it means the same thing in a staged root and on the live system. If ``/run`` is a real directory
  (someone created it), the agent links ``/run/podman/podman.sock`` inside it instead.
* rootless: ``/run/user/<uid>/podman/podman.sock`` as the podman user, ``<uid>`` being the uid podman
  wrote into the Ignition config (the host user's uid). FreeBSD's podman is rootful only, so that path
  becomes a link to root's socket, and the user joins the API group (``podman_service_api_group`` in
  ``/etc/rc.conf.d/podman_service``, else the port's default ``operator``) so that sshd, acting as
  the user, may open it. ``/var/run`` is emptied of files at every boot (``rc.d/cleanvar`` deletes
  files and sockets, not links, but a fresh image or tmpfs ``/var/run`` has nothing), so the links are
  checked on every boot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fpvm.contract import API_SOCKET as API_SOCKET  # re-exported: callers find the paths here
from fpvm.contract import RUN_API_SOCKET as RUN_SOCKET
from fpvm.contract import USER_RUN_DIR
from fpvm.contract import user_api_socket as user_socket_path
from fpvm.guest.actions import Action

if TYPE_CHECKING:
    from collections.abc import Iterable

    from fpvm.guest.context import ApplyContext
    from fpvm.guest.rootfs import RootFS
    from fpvm.ignition.model import Config

    PodmanUser = tuple[str, int | None, str]  # (name, uid from the config, JSON path)

RUN_LINK = "/run"
RUN_TARGET = "var/run"
API_GROUP = "operator"  # podman_service_api_group's default in the port's rc script


# /var/run/user/<uid>/podman/podman.sock -> ../../../podman/podman.sock (= /var/run/podman/podman.sock)
USER_SOCKET_TARGET = "../../../podman/podman.sock"


class RunLinkAction(Action):
    """``/run`` -> ``var/run`` (or, when ``/run`` is a directory, ``/run/podman/podman.sock``)."""

    kind = "run-link"

    def describe(self) -> str:
        return f"link {RUN_LINK} -> {RUN_TARGET} (root's API at {RUN_SOCKET})"

    def apply(self, ctx: ApplyContext) -> bool:
        root = ctx.root
        if root.is_dir(RUN_LINK):
            # Someone made /run a directory: serve root's socket inside it instead.
            changed = root.symlink(RUN_SOCKET, "../../var/run/podman/podman.sock")  # parents root's 0755
            if changed:
                ctx.log.warn(f"{RUN_LINK} is a directory, not a link to {RUN_TARGET}; linked {RUN_SOCKET}")
            return changed
        current = root.readlink(RUN_LINK)
        if current in (RUN_TARGET, "/var/run"):
            return False
        root.makedirs("/var/run", 0o755)
        changed = root.symlink(RUN_LINK, RUN_TARGET)
        if changed:
            ctx.log.info(f"{RUN_LINK} -> {RUN_TARGET}")
        return changed


class UserSocketAction(Action):
    """``/var/run/user/<uid>/podman/podman.sock`` -> root's API socket, owned by the podman user.

    ``uid`` is the uid from the config (what podman puts in its connection URL); the owner is the
    account's real uid, looked up at apply time (the agent may have had to give the account another
    uid when the config's clashed with an existing one).
    """

    kind = "user-api-socket"

    def __init__(self, user: str, uid: int | None, source: str = "") -> None:
        super().__init__(source, "translate")
        self.user = user
        self.uid = uid

    def describe(self) -> str:
        where = (
            user_socket_path(self.uid) if self.uid is not None else f"{USER_RUN_DIR}/<uid of {self.user}>/…"
        )
        return f"link {where} -> {API_SOCKET} for {self.user} (podman's rootless connection)"

    def fields(self) -> dict[str, Any]:
        return {"user": self.user, "uid": self.uid}

    def apply(self, ctx: ApplyContext) -> bool:
        account = ctx.accounts.user(self.user)
        if account is None:
            ctx.log.warn(f"user {self.user} does not exist; no rootless API socket link for it")
            return False
        uid = self.uid if self.uid is not None else account.uid
        root = ctx.root
        base = f"{USER_RUN_DIR}/{uid}"
        changed = root.makedirs(USER_RUN_DIR, 0o755)
        for directory in (base, f"{base}/podman"):
            changed |= root.makedirs(directory, 0o700, account.uid, account.gid)
            changed |= root.set_attrs(directory, 0o700, account.uid, account.gid)
        changed |= root.symlink(user_socket_path(uid), USER_SOCKET_TARGET, account.uid, account.gid)
        if changed:
            ctx.log.info(f"{user_socket_path(uid)} -> {API_SOCKET} for {self.user}")
        return changed


class ApiGroupAction(Action):
    """Add the podman user to the API socket's group: ``pw -R ROOT groupmod GROUP -m USER``.

    pw(8): ``pw [-R rootdir] groupmod [-n] name [-m member[,...]]`` adds members (``-M`` would replace
    the list). Nothing is run when the user already is a member.
    """

    kind = "api-group"

    def __init__(self, user: str, group: str | None = None, source: str = "") -> None:
        super().__init__(source, "translate")
        self.user = user
        self.group = group

    def describe(self) -> str:
        group = self.group or "podman_service_api_group"
        return f"add {self.user} to group {group} (access to {API_SOCKET})"

    def fields(self) -> dict[str, Any]:
        return {"user": self.user, "group": self.group}

    def apply(self, ctx: ApplyContext) -> bool:
        from fpvm.guest.passwd import pw

        name = self.group or api_group(ctx.root)
        acc = ctx.accounts
        group = acc.group(name)
        if group is None:
            ctx.log.warn(f"group {name} does not exist; {self.user} cannot reach {API_SOCKET}")
            return False
        account = acc.user(self.user)
        if account is None:
            ctx.log.warn(f"user {self.user} does not exist; not added to {name}")
            return False
        if self.user in group.members or acc.gid_of(name) == account.gid:
            return False
        ctx.run(pw(ctx, "groupmod", "-n", name, "-m", self.user))
        if ctx.recording:
            acc.add_member(group, self.user)  # through the database: its membership index stays right
            acc.save(ctx.root)
        else:
            ctx.forget_accounts()
        return True


def api_group(root: RootFS) -> str:
    """The API socket's group: ``podman_service_api_group`` from rc.conf.d, else the port's default."""
    from fpvm.guest.rcconf import read_values

    value = read_values(root, "podman_service").get("podman_service_api_group")
    return value or API_GROUP


def podman_users(config: Config) -> list[PodmanUser]:
    """(name, uid, JSON path) of the config's users podman may log in as, root excepted."""
    return [
        (user.name, user.uid, f"$.passwd.users[{i}]")
        for i, user in enumerate(config.passwd.users)
        if user.name and user.name != "root" and user.should_exist is not False
    ]


def plan_api_socket(users: Iterable[PodmanUser]) -> list[Action]:
    """What every boot does so that podman's socket paths reach ``users`` (``podman_users``)."""
    actions: list[Action] = [RunLinkAction()]
    for name, uid, path in users:
        actions.append(ApiGroupAction(name, source=path))
        actions.append(UserSocketAction(name, uid, source=path))
    return actions

