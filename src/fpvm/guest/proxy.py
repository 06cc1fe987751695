"""The host's proxy settings, made effective on FreeBSD.

podman passes the host's proxy variables to its guest in two ways:

* 4.x (qemu): a second fw_cfg entry, ``opt/com.coreos/environment``, holding base64 of
  ``K="v"|K2="v2"|`` (4.3: every pair followed by ``|``, the value inside plain double quotes) or
  ``K="v"|K2="v2"`` (4.5+: Go ``%q`` quoting, pairs joined by ``|``, plus ``SSL_CERT_FILE`` /
  ``SSL_CERT_DIR``). On Fedora CoreOS ``envset-fwcfg.service`` copies it into systemd and profile files.
* 5.x: over ssh, a root bash script writes ``/etc/environment.d/default-env.conf`` (bash ``printf %q``
  lines) and ``/etc/profile.d/default-env.sh``, then runs ``systemctl daemon-reload`` (fpvm's shim
  calls ``apply_proxy_env`` with what ``read_environment_d`` finds).

On FreeBSD the settings must reach two places:

* login shells: ``/etc/profile`` (sh, and bash as a login shell) sources ``/etc/profile.d/*.sh`` and
  then ``/usr/local/etc/profile.d/*.sh`` (freebsd-src ``bin/sh/profile``); the agent writes
  ``/usr/local/etc/profile.d/fpvm-proxy.sh``. csh/tcsh have no such directory (``/etc/csh.login`` is a
  plain file) and are not covered; pw(8) gives new users ``/bin/sh`` and root's shell is sh since 14.0.
* the podman API service: rc.subr exports ``${name}_env`` before a service's start command (also for a
  custom ``start_cmd`` like the port's ``podman_service``: ``eval "export -- $_env"``), so the agent
  sets ``podman_service_env`` in ``/etc/rc.conf.d/podman_service``. Because rc.subr ``eval``s that
  string, every value inside it is single-quoted.

podman 5.x sends the certificate variables differently: with a host ``SSL_CERT_FILE`` (or
``SSL_CERT_DIR``) it copies the certificates into ``/etc/containers/certs.d`` and names them in three
Ignition files: ``/etc/profile.d/podman-machine-ssl.sh`` (written as is: storage maps the path),
``/etc/systemd/system.conf.d/podman-machine-ssl.conf`` (``DefaultEnvironment=...``) and
``/etc/environment.d/podman-machine-ssl.conf`` (both Linux-only, skipped as files). ``cert_env_from_config``
takes just ``SSL_CERT_FILE``/``SSL_CERT_DIR`` from the last two; the boot step remembers them in the
agent's state (``cert_env``) and merges them, below the fw_cfg entry's own values, into what it applies
on every boot, and the ``systemctl daemon-reload`` shim merges them with the 5.x proxy variables, so
``podman_service`` keeps them whichever of the two wrote ``podman_service_env`` last.

Only the variables podman sends are accepted (containers/common ``config.ProxyEnv`` plus
``SSL_CERT_FILE`` and ``SSL_CERT_DIR``); anything else in the entry is reported and dropped, so a
config cannot smuggle ``PATH`` or ``LD_PRELOAD`` into the service. A proxy variable given in one case
only is also set in the other (curl reads only ``http_proxy``, Go and fetch(3) read both).

A value holding a control character (``\v``, ``\f``, ``\x1c``, U+2028 ...) is refused with a warning
naming where it came from: no proxy URL or certificate path has one, and written into a file that
rc.subr sources as root it could end a line early. Every value is quoted by ``rcconf.sh_quote``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fpvm.contract import FWCFG_ENVIRONMENT as ENVIRONMENT_ENTRY
from fpvm.guest import rcconf
from fpvm.guest.actions import Action
from fpvm.safetext import bad_char

if TYPE_CHECKING:
    from fpvm.guest.context import ApplyContext
    from fpvm.guest.rootfs import RootFS
    from fpvm.ignition.model import Config, Resource

PROFILE_FILE = "/usr/local/etc/profile.d/fpvm-proxy.sh"
PODMAN_SERVICE = "podman_service"
PODMAN_SERVICE_ENV = "podman_service_env"
ENVIRONMENT_D_FILE = "/etc/environment.d/default-env.conf"

# containers/common pkg/config: ProxyEnv (each name in both cases); podman adds the two SSL variables
# in propagateHostEnv.
_PROXY_NAMES = ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy")
PROXY_VARS: tuple[str, ...] = (*_PROXY_NAMES, *(name.upper() for name in _PROXY_NAMES))
CERT_VARS: tuple[str, ...] = ("SSL_CERT_FILE", "SSL_CERT_DIR")
ALLOWED_VARS: tuple[str, ...] = (*PROXY_VARS, *CERT_VARS)
# podman 5.x's systemd-wide environment files (Linux-only; only CERT_VARS are taken from them).
ENVIRONMENT_D_DIR = "/etc/environment.d/"
SYSTEM_CONF_D_DIR = "/etc/systemd/system.conf.d/"
CERT_STATE_KEY = "cert_env"

# Linux path podman uses for certificates -> where fpvm puts /etc/containers/* on FreeBSD.
_CERT_LINUX, _CERT_FREEBSD = "/etc/containers/", "/usr/local/etc/containers/"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EnvironmentEntryError(ValueError):
    """The environment entry cannot be decoded."""


# -- decoding what podman sends -----------------------------------------------------------------------
_GO_SIMPLE = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34, "'": 39}


def _go_unquote(text: str, start: int) -> tuple[str, int]:
    """Decode a Go double-quoted string literal starting at ``text[start] == '"'``.

    Returns the value and the index after the closing quote. ``\\xHH`` escapes are bytes (Go's ``%q``
    writes invalid UTF-8 that way), so the result is assembled as bytes and decoded at the end.
    """
    out = bytearray()
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            return out.decode("utf-8", "replace"), i + 1
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        if i + 1 >= n:
            break
        e = text[i + 1]
        if e in _GO_SIMPLE:
            out.append(_GO_SIMPLE[e])
            i += 2
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            digits = text[i + 2 : i + 2 + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise EnvironmentEntryError(f"bad escape \\{e}{digits} in {text!r}")
            if e == "x":
                out.append(int(digits, 16))
            else:
                out += chr(int(digits, 16)).encode("utf-8", "replace")
            i += 2 + width
        elif e in "01234567":
            digits = text[i + 1 : i + 4]
            if len(digits) != 3 or not all(d in "01234567" for d in digits):
                raise EnvironmentEntryError(f"bad octal escape in {text!r}")
            out.append(int(digits, 8) & 0xFF)
            i += 4
        else:
            raise EnvironmentEntryError(f"bad escape \\{e} in {text!r}")
    raise EnvironmentEntryError(f"unterminated quoted value in {text!r}")


def parse_environment(text: str) -> dict[str, str]:
    """``K="v"|K2="v2"`` (either podman format) as a dict, in order.

    4.3 wrote each pair as ``K="v"|`` with the raw value between the quotes (no escaping), so its text
    always ends with ``|``; 4.5+ joins ``%q``-quoted pairs with ``|`` and never ends with one. The raw
    form is read up to the next ``"|``, the Go form with Go's unquoting.
    """
    text = text.strip("\0\r\n ")
    env: dict[str, str] = {}
    if not text:
        return env
    raw = text.endswith("|")
    i, n = 0, len(text)
    while i < n:
        m = _NAME.match(text, i)
        if not m or m.end() >= n or text[m.end()] != "=":
            raise EnvironmentEntryError(f"expected NAME=value at offset {i} of {text!r}")
        name = m.group(0)
        i = m.end() + 1
        if i < n and text[i] == '"':
            if raw:
                end = text.find('"|', i + 1)
                if end < 0:
                    raise EnvironmentEntryError(f"unterminated value of {name} in {text!r}")
                value, i = text[i + 1 : end], end + 1
            else:
                value, i = _go_unquote(text, i)
        else:
            end = text.find("|", i)
            end = n if end < 0 else end
            value, i = text[i:end], end
        env[name] = value
        if i < n:
            if text[i] != "|":
                raise EnvironmentEntryError(f"expected '|' after {name} in {text!r}")
            i += 1
    return env


def decode_environment_entry(data: bytes) -> dict[str, str]:
    """The fw_cfg entry ``opt/com.coreos/environment`` (base64) as a dict."""
    cleaned = data.strip(b"\0\r\n \t")
    if not cleaned:
        return {}
    try:
        text = base64.b64decode(cleaned, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError) as exc:
        raise EnvironmentEntryError(f"{ENVIRONMENT_ENTRY} is not base64: {exc}") from exc
    return parse_environment(text)


def _bash_word(text: str) -> str:
    """Unquote one word as bash's ``printf %q`` writes it (backslashes, '...', $'...')."""
    out: list[str] = []
    i, n = 0, len(text)
    ansi = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "e": "\x1b"}
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            out.append(text[i + 1])
            i += 2
        elif c in "'\"":
            end = text.find(c, i + 1)
            end = n if end < 0 else end
            out.append(text[i + 1 : end])
            i = end + 1
        elif c == "$" and i + 1 < n and text[i + 1] == "'":
            i += 2
            while i < n and text[i] != "'":
                if text[i] == "\\" and i + 1 < n:
                    e = text[i + 1]
                    if e in ansi:
                        out.append(ansi[e])
                        i += 2
                    elif e in "01234567":
                        j = i + 1
                        while j < min(n, i + 4) and text[j] in "01234567":
                            j += 1
                        out.append(chr(int(text[i + 1 : j], 8)))
                        i = j
                    else:
                        out.append(e)
                        i += 2
                else:
                    out.append(text[i])
                    i += 1
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_environment_d(text: str) -> dict[str, str]:
    """``/etc/environment.d/*.conf`` lines (``K=v``; podman 5.x writes them with bash ``printf %q``)."""
    env: dict[str, str] = {}
    for line in text.split("\n"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        env.update(_assignments([_bash_word(line)]))
    return env


def read_environment_d(root: RootFS) -> dict[str, str]:
    """The proxy environment podman 5.x last wrote into the guest (empty when none)."""
    text = root.read_text(ENVIRONMENT_D_FILE)
    return parse_environment_d(text) if text else {}


def parse_default_environment(text: str) -> dict[str, str]:
    """``DefaultEnvironment=`` assignments of a systemd ``system.conf`` drop-in (quoted words)."""
    import shlex

    env: dict[str, str] = {}
    for line in text.split("\n"):
        key, sep, rest = line.strip().partition("=")
        if not sep or key.strip() != "DefaultEnvironment":
            continue
        try:
            words = shlex.split(rest)
        except ValueError:
            continue
        env.update(_assignments(words))
    return env


def _assignments(words: list[str]) -> dict[str, str]:
    """The ``NAME=value`` words among ``words`` (other words are skipped)."""
    pairs = (word.partition("=") for word in words)
    return {name: value for name, sep, value in pairs if sep and _NAME.fullmatch(name)}


def cert_env_from_config(config: Config, read: Callable[[Resource], bytes | None]) -> dict[str, str]:
    """``SSL_CERT_FILE``/``SSL_CERT_DIR`` from podman 5.x's environment.d / system.conf.d files.

    Only these two names are taken (later files win); any other variable those files set is not
    passed on, so the files cannot widen the allow-list. Paths are mapped later by ``normalise``.
    ``read`` gives a file's inline contents (None when remote); a ValueError skips that file. The
    caller passes the planner's reader (``fpvm.guest.plan.resource_bytes``): the planner imports this
    module, not the other way round.
    """
    env: dict[str, str] = {}
    parsers = ((ENVIRONMENT_D_DIR, parse_environment_d), (SYSTEM_CONF_D_DIR, parse_default_environment))
    for file in config.storage.files:
        parse = next((p for prefix, p in parsers if file.path.startswith(prefix)), None)
        if parse is None or not file.path.endswith(".conf"):
            continue
        try:
            data = read(file.contents)
        except ValueError:
            continue
        if data is None:
            continue
        found = parse(data.decode("utf-8", "replace"))
        env.update({k: found[k] for k in CERT_VARS if found.get(k)})
    return env


def saved_cert_env(root: RootFS) -> dict[str, str]:
    """The certificate variables the boot step remembered (for the daemon-reload shim)."""
    from fpvm.guest.context import State

    return cert_env_from_state(State.load(root).get(CERT_STATE_KEY))


def cert_env_from_state(saved: object) -> dict[str, str]:
    """The saved ``cert_env`` value, reduced to string values of ``CERT_VARS`` (a hand-edited state
    file cannot add variables either)."""
    if not isinstance(saved, dict):
        return {}
    return {k: saved[k] for k in CERT_VARS if isinstance(saved.get(k), str)}


# -- what FreeBSD gets ------------------------------------------------------------------------------
def unsafe_values(env: dict[str, str]) -> list[str]:
    """Names of the allowed variables whose value holds a control character (refused)."""
    return [k for k in ALLOWED_VARS if k in env and bad_char(env[k]) is not None]


def normalise(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Accepted variables (both cases of each proxy variable, cert paths mapped) and rejected names.

    Values with control characters are dropped (``unsafe_values`` names them for the warning).
    """
    accepted: dict[str, str] = {}
    rejected = [k for k in env if k not in ALLOWED_VARS]
    unsafe = set(unsafe_values(env))
    for name in ALLOWED_VARS:
        if name in env and env[name] != "" and name not in unsafe:
            value = env[name]
            if name.startswith("SSL_CERT_") and value.startswith(_CERT_LINUX):
                value = _CERT_FREEBSD + value[len(_CERT_LINUX) :]
            accepted[name] = value
    for name in PROXY_VARS:
        other = name.upper() if name.islower() else name.lower()
        if name not in accepted and other in accepted:
            accepted[name] = accepted[other]
    ordered = {k: accepted[k] for k in ALLOWED_VARS if k in accepted}
    return ordered, rejected


def apply_proxy_env(
    root: RootFS | str, env: dict[str, str], *, warn: Callable[[str], None] | None = None
) -> bool:
    """Make login shells and the podman service see ``env`` (empty: remove fpvm's settings).

    Returns True when a file changed; the caller decides whether a running podman service must be
    restarted (the new environment reaches it only at its next start). Unknown variables are dropped
    (see ``normalise``); a value with control characters is dropped with a warning naming podman 5.x's
    ``ENVIRONMENT_D_FILE`` (through ``warn``, else on stderr).
    """
    if isinstance(root, str):
        from fpvm.guest.rootfs import RootFS as _RootFS

        root = _RootFS(root)
    for name in unsafe_values(env):
        msg = f"{ENVIRONMENT_D_FILE}: value of {name} contains control characters; ignored"
        if warn is not None:
            warn(msg)
        else:
            import sys

            print(f"fpvm: warning: {msg}", file=sys.stderr)
    accepted, _rejected = normalise(env)
    changed = False
    if accepted:
        lines = ["# Proxy settings from the podman host, written by fpvm at boot. Do not edit."]
        lines += [f"export {k}={rcconf.sh_quote(v, single=True)}" for k, v in accepted.items()]
        changed |= root.write(PROFILE_FILE, ("\n".join(lines) + "\n").encode("utf-8"), 0o644, 0, 0)
        # podman_service_env: words rc.subr ``eval``s into ``export -- K='v' ...``
        value: str | None = " ".join(f"{k}={rcconf.sh_quote(v, single=True)}" for k, v in accepted.items())
    else:
        if root.lstat(PROFILE_FILE) is not None:
            changed |= root.remove(PROFILE_FILE)
        value = None
    changed |= rcconf.set_values(root, PODMAN_SERVICE, {PODMAN_SERVICE_ENV: value})
    return changed


class ProxyEnvAction(Action):
    """Apply the host's proxy variables (from the fw_cfg environment entry) to FreeBSD."""

    kind = "proxy-env"

    def __init__(self, env: dict[str, str], source: str = "") -> None:
        super().__init__(source, "translate")
        self.env, self.rejected = normalise(env)
        self.unsafe = unsafe_values(env)

    def describe(self) -> str:
        if not self.env:
            return "proxy environment: none (fpvm's proxy settings removed)"
        names = ", ".join(self.env)
        text = f"proxy environment for login shells and podman_service: {names}"
        if self.rejected or self.unsafe:
            text += f" (ignored: {', '.join([*self.rejected, *self.unsafe])})"
        return text

    def fields(self) -> dict[str, Any]:
        return {"env": self.env, "rejected": [*self.rejected, *self.unsafe]}

    def apply(self, ctx: ApplyContext) -> bool:
        for name in self.rejected:
            ctx.log.warn(f"{ENVIRONMENT_ENTRY}: variable {name} is not a proxy setting; ignored")
        where = f"{ENVIRONMENT_ENTRY} ({self.source})" if self.source else ENVIRONMENT_ENTRY
        for name in self.unsafe:
            ctx.log.warn(f"{where}: value of {name} contains control characters; ignored")
        changed = apply_proxy_env(ctx.root, self.env)
        if changed:
            ctx.log.info(self.describe())
        return changed

