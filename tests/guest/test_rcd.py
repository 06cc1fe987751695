"""The rc.d scripts: shell syntax (dash's ``sh -n``), rcorder placement among FreeBSD's own scripts,
behaviour under a stand-in rc.subr, and installation."""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from fpvm.guest import rcd
from fpvm.guest.configsource import Probe
from fpvm.guest.runner import read_record
from fpvm_support import PODMAN_IGNITION

# rcorder(8) headers of the FreeBSD scripts around ours, copied from freebsd-src libexec/rc/rc.d/
# (FILESYSTEMS, cleanvar, ldconfig, hostname, netif, NETWORKING, SERVERS, DAEMON, LOGIN, local, sshd)
# and freebsd-ports sysutils/podman/files/podman_service.in. Requirements outside this set are ignored.
BASE = {
    "FILESYSTEMS": "# PROVIDE: FILESYSTEMS\n# REQUIRE: root mountcritlocal cleanvar tmp\n",
    "cleanvar": "# PROVIDE: cleanvar\n# REQUIRE: var\n",
    "ldconfig": "# PROVIDE: ldconfig\n# REQUIRE: FILESYSTEMS\n# BEFORE:  DAEMON\n",
    "hostname": "# PROVIDE: hostname\n# REQUIRE: FILESYSTEMS\n# BEFORE:  netif\n",
    "netif": "# PROVIDE: netif\n# REQUIRE: FILESYSTEMS iovctl serial sppp sysctl\n# REQUIRE: hostid\n",
    "NETWORKING": "# PROVIDE: NETWORKING NETWORK\n# REQUIRE: netif netwait netoptions routing ppp ipfw stf\n"
    "# REQUIRE: defaultroute route6d resolv bridge\n# REQUIRE: static_arp static_ndp\n",
    "SERVERS": "# PROVIDE: SERVERS\n# REQUIRE: mountcritremote sysvipc linux ldconfig savecore watchdogd\n",
    "DAEMON": "# PROVIDE: DAEMON\n# REQUIRE: NETWORKING SERVERS\n",
    "LOGIN": "# PROVIDE: LOGIN\n# REQUIRE: DAEMON\n",
    "local": "# PROVIDE: local\n# REQUIRE: DAEMON\n# BEFORE:  LOGIN\n",
    "sshd": "# PROVIDE: sshd\n# REQUIRE: LOGIN FILESYSTEMS\n",
    "podman_service": "# PROVIDE: podman_service\n# REQUIRE: LOGIN\n",
}


def rcorder(scripts: dict[str, str]) -> list[str]:
    """rcorder(8)'s ordering (REQUIRE and BEFORE edges, a cycle is an error) over ``scripts``."""
    headers = {name: rcd.rcorder_header(text) for name, text in scripts.items()}
    provider = {p: name for name, h in headers.items() for p in h["PROVIDE"]}
    after: dict[str, set[str]] = {name: set() for name in scripts}  # name -> scripts that must run first
    for name, h in headers.items():
        for req in h["REQUIRE"]:
            if req in provider and provider[req] != name:
                after[name].add(provider[req])
        for b in h["BEFORE"]:
            if b in provider:
                after[provider[b]].add(name)
    order: list[str] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(n: str) -> None:
        if n in done:
            return
        if n in visiting:
            raise AssertionError(f"circular dependency through {n}")
        visiting.add(n)
        for m in sorted(after[n]):
            visit(m)
        visiting.discard(n)
        done.add(n)
        order.append(n)

    for n in sorted(scripts):
        visit(n)
    return order


def ours() -> dict[str, str]:
    return {name: rcd.script_text(name).decode() for name in rcd.SCRIPTS}


@pytest.mark.parametrize("name", rcd.SCRIPTS)
def test_shell_syntax(name: str, tmp_path: Path) -> None:
    f = tmp_path / name
    f.write_bytes(rcd.script_text(name))
    result = subprocess.run(["sh", "-n", str(f)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert rcd.script_text(name).startswith(b"#!/bin/sh\n")


def test_headers() -> None:
    fpvm = rcd.rcorder_header(rcd.script_text("fpvm"))
    assert fpvm == {
        "PROVIDE": ["fpvm"],
        "REQUIRE": ["FILESYSTEMS", "NETWORKING", "ldconfig"],
        "BEFORE": ["LOGIN", "sshd"],
        "KEYWORD": ["nojail"],
    }
    # Not "firstboot": rc would skip the script on every later boot.
    ready = rcd.rcorder_header(rcd.script_text("fpvm_ready"))
    assert ready["PROVIDE"] == ["fpvm_ready"]
    assert set(ready["REQUIRE"]) == {"LOGIN", "sshd", "podman_service", "fpvm"}


def test_order_among_freebsd_scripts() -> None:
    order = rcorder({**BASE, **ours()})
    pos = {name: i for i, name in enumerate(order)}
    for earlier in ("FILESYSTEMS", "cleanvar", "ldconfig", "NETWORKING", "netif"):
        assert pos[earlier] < pos["fpvm"], order
    for later in ("LOGIN", "sshd", "podman_service"):
        assert pos["fpvm"] < pos[later], order
    for earlier in ("sshd", "podman_service", "fpvm"):
        assert pos[earlier] < pos["fpvm_ready"], order


STUB_RC_SUBR = r"""
load_rc_config() { if [ -f "$RC_CONF_DIR/$1" ]; then . "$RC_CONF_DIR/$1"; fi; }
checkyesno() {
	eval _value=\$${1}
	case $_value in
	[Yy][Ee][Ss]|[Tt][Rr][Uu][Ee]|[Oo][Nn]|1) return 0 ;;
	*) return 1 ;;
	esac
}
startmsg() { :; }
run_rc_command() {
	if ! checkyesno "$rcvar"; then echo "disabled"; return 0; fi
	eval _cmd=\$${1}_cmd
	$_cmd
}
"""


def run_script(tmp_path: Path, name: str, rc_conf: dict[str, str], firstboot: bool) -> list[str]:
    """Run the script with ``start`` under a stand-in rc.subr; returns the command it ran."""
    stub = tmp_path / "rc.subr"
    stub.write_text(STUB_RC_SUBR)
    text = rcd.script_text(name).decode()
    text = text.replace(". /etc/rc.subr", f". {stub}")
    # FreeBSD-only programs: kldload may fail (ignored by the script); daemon(8) is replaced by a
    # recorder so that the argv the real one would get can be checked.
    text = text.replace("/usr/sbin/daemon -f ", f"{tmp_path}/record daemon-f ")
    script = tmp_path / name
    script.write_text(text)
    (tmp_path / "record").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > "$OUT"\n')
    (tmp_path / "record").chmod(0o755)
    conf = tmp_path / "rc.conf.d"
    conf.mkdir(exist_ok=True)
    for service, body in rc_conf.items():
        (conf / service).write_text(body)
    sentinel = tmp_path / "firstboot"
    if firstboot:
        sentinel.write_text("")
    elif sentinel.exists():
        sentinel.unlink()
    out = tmp_path / "argv"
    if out.exists():
        out.unlink()
    env = {
        "PATH": "/usr/bin:/bin",
        "RC_CONF_DIR": str(conf),
        "OUT": str(out),
        "firstboot_sentinel": str(sentinel),
    }
    result = subprocess.run(["sh", str(script), "start"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if "disabled" in result.stdout:
        return ["disabled"]
    return out.read_text().splitlines()


def test_fpvm_script_runs_boot(tmp_path: Path) -> None:
    conf = {"fpvm": f'fpvm_enable="YES"\nfpvm_command="{tmp_path}/record"\n'}
    assert run_script(tmp_path, "fpvm", conf, firstboot=True) == [
        "guest",
        "boot",
        "--root",
        "/",
        "--firstboot",
    ]
    assert run_script(tmp_path, "fpvm", conf, firstboot=False) == ["guest", "boot", "--root", "/"]
    assert run_script(tmp_path, "fpvm", {"fpvm": ""}, firstboot=True) == ["disabled"]


def test_scripts_default_to_the_agents_own_entry(tmp_path: Path) -> None:
    """Unset fpvm_command: both scripts run ``${fpvm_python} -m fpvm.guest`` (the image's python3)."""
    conf = {"fpvm": f'fpvm_enable="YES"\nfpvm_python="{tmp_path}/record"\n'}
    assert run_script(tmp_path, "fpvm", conf, firstboot=True) == [
        "-m",
        "fpvm.guest",
        "boot",
        "--root",
        "/",
        "--firstboot",
    ]
    conf = {"fpvm_ready": 'fpvm_ready_enable="YES"\n'}
    argv = run_script(tmp_path, "fpvm_ready", conf, firstboot=False)
    assert argv[:5] == ["daemon-f", "/usr/local/bin/python3", "-m", "fpvm.guest", "ready"]
    from fpvm.image import recipe

    assert argv[1] == recipe.PYTHON  # what the image installs the package for


def test_agent_entry_boots_like_fpvm_guest(tmp_path: Path) -> None:
    """``python3 -m fpvm.guest boot`` and ``fpvm guest boot`` do the same work on the same input."""
    results = []
    for name, entry in (("a", ["-m", "fpvm.guest"]), ("b", ["-m", "fpvm", "guest"])):
        root = staged(tmp_path / name)
        rec = tmp_path / name / "rec.jsonl"
        argv = [sys.executable, *entry, "boot", "--root", str(root), "--firstboot", "--no-fwcfg"]
        argv += ["--config", str(FIXTURE), "--record", str(rec), "--qemufwcfg-mount", str(tmp_path / "none")]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        cmds = [[w.replace(str(root), "ROOT") for w in c] for c in read_record(rec)]
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != "fpvm.log")
        results.append((res.returncode, cmds, files))
    assert results[0][0] == 0 and results[0][1]
    assert results[0] == results[1]


def test_ready_script_runs_in_background(tmp_path: Path) -> None:
    conf = {"fpvm_ready": 'fpvm_ready_enable="YES"\nfpvm_command="/usr/local/bin/fpvm"\n'}
    argv = run_script(tmp_path, "fpvm_ready", conf, firstboot=False)
    # daemon(8) -f: detach with stdio on /dev/null; the command follows.
    assert argv == [
        "daemon-f",
        "/usr/local/bin/fpvm",
        "guest",
        "ready",
        "--root",
        "/",
        "--port",
        "/dev/vtcon/org.fedoraproject.port.0",
        "--timeout",
        "300",
        "--no-api-socket",
    ]
    conf["podman_service"] = 'podman_service_enable="YES"\n'
    argv = run_script(tmp_path, "fpvm_ready", conf, firstboot=False)
    assert "--no-api-socket" not in argv


# -- fpvm guest boot --------------------------------------------------------------------------------
FIXTURE = PODMAN_IGNITION / "v4.3.1-qemu.ign"

MASTER = (
    "root::0:0::0:0:Charlie &:/root:/bin/sh\n"
    "operator:*:2:5::0:0:System &:/:/usr/sbin/nologin\n"
    "nobody:*:65534:65534::0:0:Unprivileged user:/nonexistent:/usr/sbin/nologin\n"
)


def staged(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for d in ("etc", "root", "usr/home", "usr/local/bin", "var/run", "var/db", "var/log", "bin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "home").symlink_to("usr/home")
    (root / "etc/master.passwd").write_text(MASTER)
    (root / "etc/passwd").write_text(
        "".join(
            ":".join([f[0], "*", f[2], f[3], f[7], f[8], f[9]]) + "\n"
            for f in (ln.split(":") for ln in MASTER.splitlines())
        )
    )
    (root / "etc/group").write_text("wheel:*:0:root\noperator:*:5:root\nnobody:*:65534:\n")
    (root / "bin/sh").write_bytes(b"")
    return root


class Device:
    """A fw_cfg device as ``fpvm.fwcfg.open_device()`` returns it (read by name)."""

    def __init__(self, entries: dict[str, bytes]) -> None:
        self.entries = entries

    def read(self, name: str) -> bytes:
        from fpvm.fwcfg.protocol import EntryNotFoundError

        if name not in self.entries:
            raise EntryNotFoundError(name)
        return self.entries[name]


def quiet() -> Probe:
    return Probe(None, lambda argv: None)


def test_boot_first_then_later(tmp_path: Path) -> None:
    root = staged(tmp_path)
    rec = tmp_path / "rec.jsonl"
    config = FIXTURE.read_bytes()
    env = base64.b64encode(b'http_proxy="http://localhost:3128"|')
    dev = Device({"opt/com.coreos/config": config, "opt/com.coreos/environment": env})
    status = rcd.boot(
        str(root),
        firstboot=True,
        record=str(rec),
        fwcfg_opener=lambda: dev,
        qemufwcfg_mount=None,
        probe=quiet(),
        echo=None,
    )
    assert status == 0
    state = json.loads((root / "var/db/fpvm/state.json").read_text())
    assert state["provisioned"] and state["podman_users"] == [["core", 501]]
    assert os.readlink(root / "run") == "var/run"
    assert os.readlink(root / "var/run/user/501/podman/podman.sock") == "../../../podman/podman.sock"
    assert 'podman_service_enable="YES"' in (root / "etc/rc.conf.d/podman_service").read_text()
    assert "podman_service_env=" in (root / "etc/rc.conf.d/podman_service").read_text()
    assert (root / "usr/local/etc/profile.d/fpvm-proxy.sh").exists()
    log = (root / "var/log/fpvm.log").read_text()
    assert "config source fw_cfg opt/com.coreos/config: found" in log
    assert ["pw", "-R", str(root), "groupmod", "-n", "operator", "-m", "core"] in read_record(rec)
    keys = (root / "usr/home/core/.ssh/authorized_keys").read_bytes()

    # A later boot: /var/run emptied, the host dropped its proxy, no --firstboot; nothing re-provisioned.
    shutil.rmtree(root / "var/run")
    (root / "var/run").mkdir()
    before = len(read_record(rec))
    dev = Device({"opt/com.coreos/config": config})
    assert (
        rcd.boot(
            str(root),
            record=str(rec),
            fwcfg_opener=lambda: dev,
            qemufwcfg_mount=None,
            probe=quiet(),
            echo=None,
        )
        == 0
    )
    assert os.readlink(root / "var/run/user/501/podman/podman.sock") == "../../../podman/podman.sock"
    assert not (root / "usr/local/etc/profile.d/fpvm-proxy.sh").exists()
    assert "podman_service_env" not in (root / "etc/rc.conf.d/podman_service").read_text()
    assert (root / "usr/home/core/.ssh/authorized_keys").read_bytes() == keys
    assert len(read_record(rec)) == before  # no pw command on a later boot

    # A boot with no config at all (providers that send it once): the remembered users are used.
    shutil.rmtree(root / "var/run")
    (root / "var/run").mkdir()
    assert (
        rcd.boot(
            str(root), record=str(rec), fwcfg_opener=None, qemufwcfg_mount=None, probe=quiet(), echo=None
        )
        == 0
    )
    assert (root / "var/run/user/501/podman/podman.sock").is_symlink()


def test_boot_from_qemufwcfg_mount_and_cli(tmp_path: Path) -> None:
    root = staged(tmp_path)
    mount = tmp_path / "qemufwcfg"
    (mount / "opt/com.coreos").mkdir(parents=True)
    (mount / "opt/com.coreos/config").write_bytes(FIXTURE.read_bytes())
    parser = argparse.ArgumentParser()
    rcd.add_boot_arguments(parser)
    args = parser.parse_args(
        [
            "--root",
            str(root),
            "--record",
            str(tmp_path / "rec"),
            "--qemufwcfg-mount",
            str(mount),
            "--no-fwcfg",
        ]
    )
    assert rcd.boot_main(args) == 0
    assert json.loads((root / "var/db/fpvm/state.json").read_text())["podman_users"] == [["core", 501]]
    assert (
        f"config source qemufwcfg {mount}/opt/com.coreos/config: found"
        in (root / "var/log/fpvm.log").read_text()
    )


def test_boot_without_any_config_fails_and_says_why(tmp_path: Path) -> None:
    root = staged(tmp_path)
    probe = Probe(None, lambda argv: "hv" if list(argv) == ["/sbin/sysctl", "-n", "kern.vm_guest"] else None)
    status = rcd.boot(
        str(root),
        record=str(tmp_path / "rec"),
        fwcfg_opener=None,
        qemufwcfg_mount=None,
        probe=probe,
        echo=None,
    )
    assert status == 1
    log = (root / "var/log/fpvm.log").read_text()
    assert "not provisioned yet and no config: hyperv KVP" in log
    assert os.readlink(root / "run") == "var/run"  # every-boot steps still ran


def test_boot_with_invalid_config_applies_nothing(tmp_path: Path) -> None:
    root = staged(tmp_path)
    bad = tmp_path / "bad.ign"
    bad.write_text('{"ignition": {"version": "3.2.0"}, "passwd": {"users": [{"name": 7}]}}')
    status = rcd.boot(
        str(root),
        config_file=str(bad),
        record=str(tmp_path / "rec"),
        fwcfg_opener=None,
        qemufwcfg_mount=None,
        probe=quiet(),
        echo=None,
    )
    assert status == 1
    assert not (tmp_path / "rec").exists()
    assert not (root / "var/db/fpvm/state.json").exists()
    assert "$.passwd.users[0].name" in (root / "var/log/fpvm.log").read_text()


@pytest.mark.slow
def test_boot_from_real_qemu_fwcfg(tmp_path: Path) -> None:
    """QEMU 7.2 given the config and the proxy entry exactly as podman 4.x passes them
    (``-fw_cfg name=opt/com.coreos/config,file=…``, ``-fw_cfg name=opt/com.coreos/environment,string=…``),
    read through fpvm.fwcfg's QMP transport (the register protocol /dev/io uses in the guest)."""
    from fpvm.fwcfg import open_device

    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.fail("qemu-system-x86_64 is required")
    config = PODMAN_IGNITION / "HEAD-qemu.ign"  # the smallest podman config: each byte is one HMP command
    env = base64.b64encode(b'HTTPS_PROXY="http://proxy.example:8080"|').decode()
    sock = tmp_path / "qmp.sock"
    argv = [qemu, "-machine", "pc", "-accel", "tcg", "-S", "-nodefaults", "-display", "none"]
    argv += ["-qmp", f"unix:{sock},server=on,wait=off"]
    argv += ["-fw_cfg", f"name=opt/com.coreos/config,file={config}"]
    argv += ["-fw_cfg", f"name=opt/com.coreos/environment,string={env}"]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(600):
            if sock.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "QEMU exited"
        root = staged(tmp_path)
        status = rcd.boot(
            str(root),
            record=str(tmp_path / "rec"),
            fwcfg_opener=lambda: open_device(str(sock)),
            qemufwcfg_mount=None,
            probe=quiet(),
            echo=None,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert status == 0
    log = (root / "var/log/fpvm.log").read_text()
    assert f"config source fw_cfg opt/com.coreos/config: found ({config.stat().st_size} bytes)" in log
    assert "config source fw_cfg opt/com.coreos/environment: found" in log
    profile = (root / "usr/local/etc/profile.d/fpvm-proxy.sh").read_text()
    assert "export HTTPS_PROXY='http://proxy.example:8080'\n" in profile
    assert "export https_proxy='http://proxy.example:8080'\n" in profile
    assert json.loads((root / "var/db/fpvm/state.json").read_text())["podman_users"] == [["core", 501]]


def service_env(conf: Path, names: str) -> list[str]:
    """What rc.subr gives podman_service: ``load_rc_config`` sources the file, then
    ``eval "export -- $_env"`` runs before the start command (run here with the real sh)."""
    script = '. "$1"; _env="$podman_service_env"; eval "export -- $_env"; for n in ' + names
    script += '; do eval "printf \'%s=%s\\n\' $n \\"\\${$n-}\\""; done'
    out = subprocess.run(["sh", "-c", script, "sh", str(conf)], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_podman5_cert_variables_reach_podman_service(tmp_path: Path) -> None:
    """podman 5.x names the host's CA bundle in system.conf.d / environment.d files (skipped as
    Linux-only); podman_service must still get SSL_CERT_FILE, at the FreeBSD path where the bundle is."""
    root = staged(tmp_path)
    config = (Path(__file__).parent / "podman-configs/v5.1.2-qemu-certs.ign").read_bytes()
    common = dict(record=str(tmp_path / "rec"), qemufwcfg_mount=None, probe=quiet(), echo=None)
    status = rcd.boot(
        str(root), firstboot=True, fwcfg_opener=lambda: Device({"opt/com.coreos/config": config}), **common
    )  # type: ignore[arg-type]
    assert status == 0
    conf = root / "etc/rc.conf.d/podman_service"
    bundle = "/usr/local/etc/containers/certs.d/corp-root.pem"
    assert service_env(conf, "SSL_CERT_FILE LD_PRELOAD") == [f"SSL_CERT_FILE={bundle}", "LD_PRELOAD="]
    assert (root / bundle.lstrip("/")).read_text().startswith("-----BEGIN CERTIFICATE-----")
    # A later boot that finds no config keeps them (remembered in the state).
    status = rcd.boot(str(root), fwcfg_opener=None, **common)  # type: ignore[arg-type]
    assert status == 0
    assert service_env(conf, "SSL_CERT_FILE") == [f"SSL_CERT_FILE={bundle}"]


def test_cert_files_cannot_inject_other_variables(tmp_path: Path) -> None:
    root = staged(tmp_path)
    cfg = json.loads(FIXTURE.read_text())
    text = "SSL_CERT_DIR=/etc/containers/certs.d\nLD_PRELOAD=/tmp/evil.so\nhttp_proxy=http://evil:1\n"
    dropin = '[Manager]\nDefaultEnvironment=PATH=/tmp "SSL_CERT_FILE=/etc/ssl/cert.pem"\n'
    cfg.setdefault("storage", {}).setdefault("files", []).extend(
        [
            {
                "path": "/etc/environment.d/podman-machine-ssl.conf",
                "contents": {"source": "data:," + quote(text)},
            },
            {"path": "/etc/systemd/system.conf.d/x.conf", "contents": {"source": "data:," + quote(dropin)}},
        ]
    )
    cfg_file = tmp_path / "c.ign"
    cfg_file.write_text(json.dumps(cfg))
    status = rcd.boot(
        str(root),
        config_file=str(cfg_file),
        record=str(tmp_path / "rec"),
        fwcfg_opener=None,
        qemufwcfg_mount=None,
        probe=quiet(),
        echo=None,
    )
    assert status == 0
    value = (root / "etc/rc.conf.d/podman_service").read_text()
    assert "LD_PRELOAD" not in value and "PATH" not in value and "evil" not in value
    assert service_env(root / "etc/rc.conf.d/podman_service", "SSL_CERT_FILE SSL_CERT_DIR") == [
        "SSL_CERT_FILE=/etc/ssl/cert.pem",
        "SSL_CERT_DIR=/usr/local/etc/containers/certs.d",
    ]
