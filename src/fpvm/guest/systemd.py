"""podman's systemd units, translated by a table.

Everything under ``systemd.units`` is Linux-only. Each unit podman sends has either a FreeBSD meaning
(an rc service, a step of the agent) or none; the table below says which, so that ``fpvm guest plan``
and ``fpvm ignition show`` print the same classification. A unit nobody knows is reported and
skipped: never fatal, the VM must still boot and send Ready.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fpvm.contract import FWCFG_ENVIRONMENT
from fpvm.contract import READY_DEVICE as READY_PORT
from fpvm.guest.actions import Action, Disposition, Note
from fpvm.guest.rcconf import RcConfSet

if TYPE_CHECKING:
    from fpvm.ignition.model import Config, Unit

PODMAN_SERVICE = "podman_service"


@dataclass(frozen=True)
class UnitRule:
    """How one unit (by name pattern) maps to FreeBSD."""

    pattern: str
    disposition: Disposition
    meaning: str


UNIT_TABLE: tuple[UnitRule, ...] = (
    UnitRule(
        "podman.socket",
        "translate",
        "podman API service: podman_service_enable in /etc/rc.conf.d/podman_service "
        "(socket /var/run/podman/podman.sock, reachable at /run/podman/podman.sock)",
    ),
    UnitRule("podman.service", "translate", "podman API service (rc.d/podman_service)"),
    UnitRule(
        "ready.service",
        "translate",
        f"readiness: rc.d/fpvm_ready writes Ready to {READY_PORT} once sshd and the API socket are up",
    ),
    UnitRule(
        "envset-fwcfg.service",
        "translate",
        "proxy environment: the agent applies fw_cfg opt/com.coreos/environment at every boot "
        "(login shells and podman_service)",
    ),
    UnitRule("*.mount", "translate", "mounted at every boot by the mount step (mount -t p9fs)"),
    # podman 4.8-4.9 applehv: companions of each volume's .mount unit
    UnitRule(
        "*.automount",
        "ignore",
        "on-demand companion of a podman volume's .mount unit; the mount step mounts it at boot",
    ),
    UnitRule(
        "virtiofs-mount-prepare@*",
        "ignore",
        "creates a volume's mount point under Fedora CoreOS's immutable /; the mount step creates it",
    ),
    UnitRule(
        "net-health-recovery.service",
        "ignore",
        "podman 4.9 on macOS: restarts Fedora's enp0s1 when gvproxy stops answering; Linux-only",
    ),
    UnitRule("docker.service", "ignore", "FreeBSD has no docker engine (masked on Fedora CoreOS)"),
    UnitRule("docker.socket", "ignore", "FreeBSD has no docker engine (masked on Fedora CoreOS)"),
    UnitRule("remove-moby.service", "ignore", "removes moby-engine with rpm-ostree; not installed here"),
    UnitRule("zincati.service", "ignore", "Fedora CoreOS update agent; FreeBSD updates differently"),
    UnitRule("*linger*", "ignore", "systemd user lingering; FreeBSD has no user session manager"),
    UnitRule(
        "immutable-root-*.service",
        "ignore",
        "toggles chattr +i / on Fedora CoreOS; FreeBSD's root is writable",
    ),
)

UNKNOWN = UnitRule("*", "ignore", "no FreeBSD translation for this unit; reported and skipped")


def rule_for(name: str) -> UnitRule:
    """The table's rule for a unit name (first match wins; ``UNKNOWN`` if none)."""
    for rule in UNIT_TABLE:
        if fnmatch.fnmatchcase(name, rule.pattern):
            return rule
    return UNKNOWN


def classify_unit(unit: Unit, where: str = "") -> tuple[Disposition, str]:
    """(disposition, explanation) of one ``systemd.units[]`` entry, for ``show`` and ``plan``.

    Takes the unit's ``name``, ``enabled``, ``mask`` and ``contents`` into account: a disabled or
    masked podman unit means the service stays off, a vsock ready unit cannot be honoured, and a
    ``*.mount`` unit gets the mount step's own verdict (``fpvm.guest.mounts.unit_request``).
    """
    rule = rule_for(unit.name)
    if rule.pattern in ("podman.socket", "podman.service"):
        if unit.mask or unit.enabled is False:
            return "translate", "podman API service disabled: podman_service_enable=NO"
        if unit.enabled is None:
            return "ignore", "podman unit neither enabled nor disabled: nothing to do"
    if rule.pattern == "*.mount":
        from fpvm.guest.mounts import unit_request

        req, why = unit_request(unit, where or "unit")
        if req is None:
            return "ignore", why
    if rule.pattern == "ready.service" and "VSOCK-CONNECT" in (unit.contents or ""):
        return (
            "ignore",
            "readiness over vsock (applehv/libkrun/hyperv) cannot be sent: FreeBSD has no virtio-vsock "
            f"driver; the agent writes to {READY_PORT} when it exists",
        )
    return rule.disposition, rule.meaning


def plan_units(config: Config, *, environment: dict[str, str] | None = None) -> list[Action]:
    """Actions for ``systemd.units`` of ``config`` (first boot), by the table above.

    ``environment`` is the decoded ``opt/com.coreos/environment`` entry when the caller has one; it is
    planned as a proxy action here so that ``fpvm guest plan`` shows it (the boot step applies it again
    on every boot, since podman passes it on every start).
    """
    actions: list[Action] = []
    podman_enable: str | None = None
    podman_source = ""
    for i, unit in enumerate(config.systemd.units):
        name = unit.name
        where = f"$.systemd.units[{i}]"
        disposition, note = classify_unit(unit, where)
        if rule_for(name).pattern in ("podman.socket", "podman.service") and disposition == "translate":
            off = unit.mask or unit.enabled is False
            # Any enabled podman unit turns the service on; it is off only if none is enabled.
            if podman_enable != "YES":
                podman_enable, podman_source = ("NO" if off else "YES"), where
            continue
        actions.append(Note(name or "(unnamed unit)", note, where, disposition))
        if unit.dropins:
            actions.append(
                Note(f"{name} drop-ins", "systemd drop-ins have no FreeBSD meaning; skipped", where)
            )
    if podman_enable is not None:
        enable: dict[str, str | None] = {"podman_service_enable": podman_enable}
        actions.insert(0, RcConfSet(PODMAN_SERVICE, enable, source=podman_source, note="podman.socket"))
    if environment is not None:
        from fpvm.guest.proxy import ProxyEnvAction

        actions.append(ProxyEnvAction(environment, source=f"fw_cfg {FWCFG_ENVIRONMENT}"))
    return actions

