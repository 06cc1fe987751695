"""systemd units by table, over every unit podman sends (all fixtures), plus units nobody knows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fpvm.guest.actions import Note
from fpvm.guest.context import make_context
from fpvm.guest.proxy import ProxyEnvAction
from fpvm.guest.rcconf import RcConfSet
from fpvm.guest.systemd import classify_unit, plan_units, rule_for
from fpvm.ignition import parse
from fpvm.ignition.model import Config, Dropin, Systemd, Unit
from fpvm_support import podman_ignition_configs


def unit(name: str, **kw: Any) -> Unit:
    return Unit(name=name, **kw)


def config_of(*units: Unit) -> Config:
    return Config(systemd=Systemd(units=list(units)))


CONFIGS = podman_ignition_configs()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_podman_unit_is_classified(path: Path) -> None:
    config = parse(path.read_bytes())
    names = [u.name for u in config.systemd.units]
    actions = plan_units(config)
    # podman.socket is the one unit with a FreeBSD effect: the API service is enabled.
    assert isinstance(actions[0], RcConfSet)
    assert actions[0].values == {"podman_service_enable": "YES"}
    notes = {a.subject: a for a in actions[1:] if isinstance(a, Note)}
    assert set(notes) == {n for n in names if n != "podman.socket"}
    for name, note in notes.items():
        assert rule_for(name).pattern != "*", f"{path.name}: {name} is not in the table"
        assert note.note
    for name in (
        "docker.service",
        "docker.socket",
        "remove-moby.service",
        "zincati.service",
        "immutable-root-off.service",
        "immutable-root-on.service",
    ):
        if name in notes:
            assert notes[name].disposition == "ignore"
    for name in names:
        if name.endswith(".mount") or name in ("envset-fwcfg.service",):
            assert notes[name].disposition == "translate"


def test_ready_service_qemu_versus_vsock() -> None:
    qemu = unit(
        "ready.service",
        enabled=True,
        contents="[Service]\nExecStart=/bin/sh -c '/usr/bin/echo Ready >/dev/vport1p1'\n",
    )
    vsock = unit(
        "ready.service",
        enabled=True,
        contents="[Service]\nExecStart=/bin/sh -c '/usr/bin/echo Ready | socat - VSOCK-CONNECT:2:1025'\n",
    )
    assert classify_unit(qemu)[0] == "translate"
    disposition, note = classify_unit(vsock)
    assert disposition == "ignore"
    assert "virtio-vsock" in note


def test_unknown_units_are_reported_never_fatal(tmp_path: Path) -> None:
    cfg = config_of(
        unit("playbook.service", enabled=True, contents="[Service]\nExecStart=ansible-playbook x\n"),
        unit("vsock-network.service", enabled=True),
        unit("user-linger@core.service", enabled=True),
        unit("", enabled=True),
        unit("podman.socket", enabled=True, dropins=[Dropin(name="x.conf", contents="[Socket]\n")]),
    )
    actions = plan_units(cfg)
    described = [a.describe() for a in actions]
    assert any("playbook.service" in d and "no FreeBSD translation" in d for d in described)
    assert any("vsock-network.service" in d for d in described)
    assert any("user-linger@core.service" in d and "lingering" in d for d in described)
    assert any("(unnamed unit)" in d for d in described)
    ctx = make_context(str(tmp_path), record=str(tmp_path / "rec"))
    for action in actions:
        action.apply(ctx)  # notes only log
    assert (tmp_path / "etc/rc.conf.d/podman_service").read_bytes() == b'podman_service_enable="YES"\n'


@pytest.mark.parametrize(
    ("units", "value"),
    [
        ([unit("podman.socket", enabled=False)], "NO"),
        ([unit("podman.socket", mask=True)], "NO"),
        ([unit("podman.socket", enabled=False), unit("podman.service", enabled=True)], "YES"),
        ([unit("podman.service", enabled=True), unit("podman.socket", mask=True)], "YES"),
    ],
)
def test_podman_service_on_or_off(units: list[Unit], value: str) -> None:
    actions = plan_units(config_of(*units))
    rc = [a for a in actions if isinstance(a, RcConfSet)]
    assert len(rc) == 1
    assert rc[0].values == {"podman_service_enable": value}


def test_podman_socket_without_enabled_does_nothing() -> None:
    actions = plan_units(config_of(unit("podman.socket")))
    assert not any(isinstance(a, RcConfSet) for a in actions)


def test_environment_becomes_a_proxy_action() -> None:
    actions = plan_units(
        config_of(unit("envset-fwcfg.service", enabled=True)), environment={"http_proxy": "h"}
    )
    assert isinstance(actions[-1], ProxyEnvAction)
    assert actions[-1].env == {"http_proxy": "h", "HTTP_PROXY": "h"}


def test_no_systemd_section() -> None:
    assert plan_units(Config()) == []
