"""The host's proxy settings: podman's encodings in, FreeBSD's login shells and rc.subr's ${name}_env out.

The encoders below follow podman's code exactly:
* 4.3 (pkg/machine/qemu/machine.go, LoadVMByName): ``proxies = fmt.Sprintf("%s%s=\\"%s\\"|", proxies, k, v)``;
* 4.5+ (propagateHostEnv): ``fmt.Sprintf("%s=%q", k, v)`` joined with ``|``, plus SSL_CERT_FILE/DIR;
both base64-encoded with StdEncoding into ``-fw_cfg name=opt/com.coreos/environment,string=...``.
The consumers are checked with the real shell: dash sources the profile file, and rc.subr's
``eval "export -- $_env"`` is run verbatim on the rc.conf.d value.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from fpvm.guest import proxy
from fpvm.guest.context import make_context
from fpvm.guest.proxy import EnvironmentEntryError, ProxyEnvAction
from fpvm.guest.rootfs import RootFS


def podman431_entry(env: dict[str, str]) -> bytes:
    proxies = "".join(f'{k}="{v}"|' for k, v in env.items())
    return base64.b64encode(proxies.encode())


def go_quote(value: str) -> str:
    """Go's strconv.Quote for the characters used in these tests (printable kept, others escaped)."""
    out = ['"']
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def podman45_entry(env: dict[str, str]) -> bytes:
    return base64.b64encode("|".join(f"{k}={go_quote(v)}" for k, v in env.items()).encode())


HOST_ENV = {
    "http_proxy": "http://host.containers.internal:3128",
    "HTTPS_PROXY": "http://user:p%40ss@proxy.example:8080",
    "NO_PROXY": "localhost,.internal,192.168.127.0/24",
}


@pytest.mark.parametrize("encode", [podman431_entry, podman45_entry])
def test_decode_both_podman_formats(encode: object) -> None:
    assert proxy.decode_environment_entry(encode(HOST_ENV)) == HOST_ENV  # type: ignore[operator]


def test_go_escapes_and_ssl_vars() -> None:
    env = {"HTTP_PROXY": 'http://a"b\\c\td|e', "SSL_CERT_FILE": "/etc/containers/certs.d/ca.pem"}
    assert proxy.decode_environment_entry(podman45_entry(env)) == env
    # \u and \x escapes as Go writes them for non-printable runes and invalid UTF-8
    text = 'NO_PROXY="caf\\u00e9,\\x41"|http_proxy="h"'
    assert proxy.parse_environment(text) == {"NO_PROXY": "café,A", "http_proxy": "h"}


def test_decode_tolerates_nul_and_newline_padding() -> None:
    assert proxy.decode_environment_entry(podman431_entry({"http_proxy": "x"}) + b"\n\0") == {
        "http_proxy": "x"
    }
    assert proxy.decode_environment_entry(b"") == {}


@pytest.mark.parametrize(
    "data", [b"%%%notbase64", base64.b64encode(b'K="unterminated'), base64.b64encode(b"=x")]
)
def test_bad_entries_raise(data: bytes) -> None:
    with pytest.raises(EnvironmentEntryError):
        proxy.decode_environment_entry(data)


def test_normalise_cases_paths_and_unknown_names() -> None:
    env = {
        "http_proxy": "http://p:1",
        "NO_PROXY": "a,b",
        "SSL_CERT_FILE": "/etc/containers/certs.d/ca.pem",
        "SSL_CERT_DIR": "/etc/containers/certs.d",
        "PATH": "/evil",
        "LD_PRELOAD": "/evil.so",
        "https_proxy": "",
    }
    accepted, rejected = proxy.normalise(env)
    assert accepted == {
        "http_proxy": "http://p:1",
        "no_proxy": "a,b",
        "HTTP_PROXY": "http://p:1",
        "NO_PROXY": "a,b",
        "SSL_CERT_FILE": "/usr/local/etc/containers/certs.d/ca.pem",
        "SSL_CERT_DIR": "/usr/local/etc/containers/certs.d",
    }
    assert rejected == ["PATH", "LD_PRELOAD"]


def sh(script: str, *args: str) -> str:
    return subprocess.run(["sh", "-c", script, "sh", *args], capture_output=True, check=True).stdout.decode()


TRICKY = {
    "http_proxy": "http://u:it's;$HOME`x`@h:3128",
    "no_proxy": 'a b,"c"',
}


def test_apply_reaches_login_shells_and_rc_env(tmp_path: Path) -> None:
    root = RootFS(tmp_path)
    assert proxy.apply_proxy_env(root, TRICKY) is True
    profile = tmp_path / "usr/local/etc/profile.d/fpvm-proxy.sh"
    assert profile.stat().st_mode & 0o777 == 0o644
    # A login shell: /etc/profile sources profile.d/*.sh (freebsd-src bin/sh/profile).
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        assert sh(f'. "$1"; printf %s "${name}"', str(profile)) == TRICKY[name.lower()]
    # rc.subr: load_rc_config sources /etc/rc.conf.d/podman_service, then runs
    # eval "export -- $_env" before the start command; the child sees exactly the host's values.
    conf = tmp_path / "etc/rc.conf.d/podman_service"
    out = sh(
        '. "$1"; _env="$podman_service_env"; eval "export -- $_env"; '
        'printf "%s\\n%s\\n" "$HTTP_PROXY" "$no_proxy"; env | grep -c "^[a-zA-Z_]*_proxy=\\|^[A-Z_]*_PROXY="',
        str(conf),
    )
    assert out.splitlines() == [TRICKY["http_proxy"], TRICKY["no_proxy"], "4"]
    # Idempotent: same env, nothing rewritten.
    mtimes = (profile.stat().st_mtime_ns, conf.stat().st_mtime_ns)
    assert proxy.apply_proxy_env(str(tmp_path), TRICKY) is False
    assert (profile.stat().st_mtime_ns, conf.stat().st_mtime_ns) == mtimes


def test_empty_env_removes_settings_but_keeps_other_lines(tmp_path: Path) -> None:
    conf = tmp_path / "etc/rc.conf.d/podman_service"
    conf.parent.mkdir(parents=True)
    conf.write_bytes(b'podman_service_enable="YES"\n')
    assert proxy.apply_proxy_env(RootFS(tmp_path), {"http_proxy": "http://p"})
    assert proxy.apply_proxy_env(RootFS(tmp_path), {})
    assert conf.read_bytes() == b'podman_service_enable="YES"\n'
    assert not (tmp_path / "usr/local/etc/profile.d/fpvm-proxy.sh").exists()
    assert proxy.apply_proxy_env(RootFS(tmp_path), {}) is False


@pytest.mark.parametrize(
    "value", ["proxy1", "no1,no2", "http://h:1/with space", "q'uo\"te$x", "new\nline", "tab\there"]
)
def test_environment_d_as_podman5_writes_it(tmp_path: Path, value: str) -> None:
    # podman 5.x: printf "%q\n" "$proxy" >> /etc/environment.d/default-env.conf (run by bash).
    f = tmp_path / "etc/environment.d/default-env.conf"
    f.parent.mkdir(parents=True)
    subprocess.run(
        [
            "bash",
            "-c",
            'for p in "$@"; do printf "%q\\n" "$p" >> "$F"; done',
            "bash",
            f"http_proxy={value}",
            "NO_PROXY=x",
        ],
        env={"F": str(f), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert proxy.read_environment_d(RootFS(tmp_path)) == {"http_proxy": value, "NO_PROXY": "x"}


def test_action(tmp_path: Path) -> None:
    ctx = make_context(str(tmp_path), record=str(tmp_path / "rec"))
    action = ProxyEnvAction({"http_proxy": "http://p", "BOGUS": "1"}, source="fw_cfg")
    assert action.to_json()["rejected"] == ["BOGUS"]
    assert "http_proxy, HTTP_PROXY" in action.describe()
    assert action.apply(ctx) is True
    assert ctx.log.warnings == 1
    assert action.apply(ctx) is False


# -- the real podman 4.3.1 client -----------------------------------------------------------------------
GVPROXY_STANDIN = """#!/usr/bin/python3
import os, socket, sys, time
args = sys.argv[1:]
path = args[args.index("-listen-qemu") + 1].removeprefix("unix://")
with open(args[args.index("-pid-file") + 1], "w") as fh:
    fh.write(str(os.getpid()))
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(1)
s.settimeout(1)
conns, end = [], time.time() + 60
while time.time() < end and not os.path.exists(os.environ["HOME"] + "/qemu-argv"):
    try:
        conns.append(s.accept()[0])
    except OSError:
        pass
"""

QEMU_STANDIN = '#!/bin/sh\nprintf "%s\\n" "$@" > "$HOME/qemu-argv"\nexit 1\n'


def podman431_start_argv(proxies: dict[str, str]) -> list[str]:
    """Run the real ``podman machine init`` + ``start`` (4.3.1) with ``proxies`` in its environment and
    return the argv it gave to qemu (a stand-in that records it; gvproxy is a stand-in too)."""
    podman = shutil.which("podman")
    if podman is None:
        pytest.fail("podman 4.3.1 is required (apt-get install podman)")
    base = Path(tempfile.mkdtemp(prefix="fpvm-podman-env-"))
    try:
        home, run, bindir = base / "home", base / "run", base / "bin"
        for d in (home / ".config/containers", run, bindir):
            d.mkdir(parents=True)
        (bindir / "gvproxy").write_text(GVPROXY_STANDIN)
        (bindir / "qemu-system-x86_64").write_text(QEMU_STANDIN)
        for f in bindir.iterdir():
            f.chmod(0o755)
        (home / ".config/containers/containers.conf").write_text(
            f'[engine]\nhelper_binaries_dir = ["{bindir}"]\n'
        )
        (base / "fake.img").write_bytes(b"\0" * 65536)
        run.chmod(0o700)
        prefix: list[str] = []
        if os.geteuid() == 0:  # podman machine refuses to run as root
            for p in [base, *base.rglob("*")]:
                os.chown(p, 65534, 65534)
            prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(run), "PATH": f"{bindir}:/usr/bin:/bin"}
        subprocess.run(
            [
                *prefix,
                podman,
                "machine",
                "init",
                "--image-path",
                str(base / "fake.img"),
                "--timezone",
                "UTC",
                "t",
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        # start fails once the stand-in qemu exits: only its argv matters here.
        subprocess.run(
            [*prefix, podman, "machine", "start", "t"],
            env={**env, **proxies},
            capture_output=True,
            timeout=120,
        )
        return (home / "qemu-argv").read_text().splitlines()
    finally:
        pid = base / "run/podman/t_proxy.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid.read_text()), signal.SIGTERM)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_real_podman_431_environment_entry(tmp_path: Path) -> None:
    proxies = {
        "http_proxy": "http://localhost:3128",
        "HTTPS_PROXY": 'http://u:p"q@proxy:8080',
        "NO_PROXY": "a,b",
    }
    argv = podman431_start_argv(proxies)
    entries = [argv[i + 1] for i, a in enumerate(argv) if a == "-fw_cfg"]
    prefix = "name=opt/com.coreos/environment,string="
    env_entry = next(e for e in entries if e.startswith(prefix))[len(prefix) :]
    # 4.3.1 passes values verbatim (no escaping, localhost not rewritten); the guest must get them back.
    assert proxy.decode_environment_entry(env_entry.encode()) == proxies
    assert proxy.apply_proxy_env(RootFS(tmp_path), proxy.decode_environment_entry(env_entry.encode()))
    profile = tmp_path / "usr/local/etc/profile.d/fpvm-proxy.sh"
    assert sh('. "$1"; printf %s "$https_proxy"', str(profile)) == proxies["HTTPS_PROXY"]
