"""``systemctl``: the few things podman asks of systemd, done with FreeBSD's rc system.

* ``daemon-reload``: podman 5.x runs it (as root, at the end of a bash script fed through ssh on
  every start) right after writing the host's proxy variables to ``/etc/environment.d/
  default-env.conf``; the script's exit status is fatal for ``podman machine start``. Here it makes
  that environment FreeBSD's: login shells and the podman API service (``fpvm.guest.proxy``), and
  restarts the running API service when the environment changed.
* ``start|stop|restart|enable|disable`` of a unit with a FreeBSD counterpart -> service(8) /
  ``sysrc -f /etc/rc.conf.d/<service>`` (rc configuration lives only in ``/etc/rc.conf.d``).
* anything else: exit 0 with a log line (systemd-only state has nothing to do on FreeBSD).
"""

from __future__ import annotations

from fpvm.guest.compat.base import Shim

SERVICE = "/usr/sbin/service"
SYSRC = "/usr/sbin/sysrc"
RC_CONF_D = "/etc/rc.conf.d"

# systemd unit -> rc.d script (and its rcvar prefix) on FreeBSD.
UNITS: dict[str, str] = {
    "podman.socket": "podman_service",
    "podman.service": "podman_service",
    "podman-restart.service": "podman",
    "sshd.service": "sshd",
    "sshd.socket": "sshd",
}
ACTIONS = ("start", "stop", "restart", "enable", "disable")
# Options that change nothing for us; the rest of the ``--x`` options are reported and ignored too.
QUIET = ("-q", "--quiet", "--no-block", "--system", "--no-pager", "--no-ask-password")


def daemon_reload(shim: Shim) -> int:
    from fpvm.guest.proxy import PODMAN_SERVICE, apply_proxy_env, read_environment_d, saved_cert_env

    try:
        # The certificate variables the boot step took from the Ignition stay in podman_service_env.
        env = {**saved_cert_env(shim.root), **read_environment_d(shim.root)}
        changed = apply_proxy_env(shim.root, env)
    except (OSError, ValueError) as exc:
        return shim.error(f"daemon-reload: cannot apply the proxy environment: {exc}")
    names = ", ".join(sorted(env)) or "none"
    shim.info(f"daemon-reload: proxy environment ({names}) {'applied' if changed else 'unchanged'}")
    if changed and shim.run([SERVICE, PODMAN_SERVICE, "status"]).ok:
        result = shim.run([SERVICE, PODMAN_SERVICE, "restart"])
        if not result.ok:
            # The environment is in place for the next start; podman's start must not fail over it.
            err = result.stderr.decode("utf-8", "replace").strip()
            shim.note(f"daemon-reload: restarting {PODMAN_SERVICE} failed: {err}")
    return 0


def unit_action(shim: Shim, action: str, units: list[str], now: bool) -> int:
    status = 0
    for unit in units:
        rc = UNITS.get(unit if "." in unit else f"{unit}.service")
        if rc is None:
            shim.note(f"{action} {unit}: no FreeBSD counterpart, nothing done")
            continue
        if action in ("enable", "disable"):
            value = "YES" if action == "enable" else "NO"
            argv = [SYSRC, "-f", f"{RC_CONF_D}/{rc}", f"{rc}_enable={value}"]
            result = shim.run(argv)
            if result.ok and now:
                result = shim.run([SERVICE, rc, "start" if action == "enable" else "stop"])
        else:
            result = shim.run([SERVICE, rc, action])
        if not result.ok:
            err = result.stderr.decode("utf-8", "replace").strip()
            status = shim.error(f"{action} {unit} ({rc}): {err or f'exit {result.returncode}'}")
    return status


def run(shim: Shim, args: list[str]) -> int:
    words = [a for a in args if not a.startswith("-")]
    now = "--now" in args
    ignored = [a for a in args if a.startswith("-") and a not in (*QUIET, "--now")]
    if ignored:
        shim.info(f"ignored options: {' '.join(ignored)}")
    if not words:
        shim.note("no command given; nothing to do on FreeBSD")
        return 0
    command, units = words[0], words[1:]
    if command == "daemon-reload":
        return daemon_reload(shim)
    if command in ACTIONS and units:
        return unit_action(shim, command, units, now)
    shim.note(f"{' '.join(words)}: systemd only, nothing to do on FreeBSD (use service(8))")
    return 0
