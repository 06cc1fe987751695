"""http(s) fetching with upstream Ignition's retry, back-off, timeouts, headers and redirects.

Behaviour taken from coreos/ignition ``internal/resource/{url,http}.go``:

* every attempt that fails to connect or gets a status >= 500 is retried after a back-off that starts
  at 200 ms, doubles, and is capped at 5 s;
* 200 and 204 succeed; 404 fails at once with "resource not found"; any other status fails at once;
* ``timeouts.httpResponseHeaders`` (default 10 s, 0 = none) bounds each wait for response headers;
  ``timeouts.httpTotal`` (default 0 = none) bounds everything: all attempts, back-offs and the body;
* requests carry ``User-Agent: Ignition/...``, ``Accept: application/vnd.coreos.ignition+json;
  version=3.6.0, */*;q=0.1`` and ``Accept-Encoding: identity``; a resource's ``httpHeaders`` replace
  these (one value per name, the last one wins);
* redirects (301/302/303/307/308, at most 10 as Go's http.Client) are followed, but without any of the
  request's headers, so credentials meant for one server never reach another;
* ``ignition.proxy`` follows Go's ``httpproxy`` rules (loopback is never proxied; ``noProxy`` takes
  ``*``, IPs, CIDRs and domain suffixes, each optionally with a port).

fpvm's guards where upstream has none (a boot must end in bounded time and memory):

* one deadline for all fetching in a boot: ``FetchOptions.budget`` (``fpvm.ignition.resources.Budget``,
  default 300 s) is shared by every resource one provisioning run fetches, so N dead URLs cost one
  deadline, not N; ``httpTotal`` still bounds each resource within it;
* a redirect loop fails at the 11th redirect and a server that does not send its response headers
  within ``httpResponseHeaders`` fails at that timeout, instead of being retried (upstream retries
  both until ``httpTotal``, which defaults to never);
* a response larger than ``max_bytes`` (64 MiB) is refused instead of filling the guest's memory.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from fpvm import __version__
from fpvm.ignition.budget import MAX_RESOURCE_BYTES, Budget
from fpvm.ignition.srcerrors import SourceError

INITIAL_BACKOFF = 0.2
MAX_BACKOFF = 5.0
DEFAULT_RESPONSE_HEADER_TIMEOUT = 10.0
DEFAULT_TOTAL_TIMEOUT = 0.0
DIAL_TIMEOUT = 30.0
TLS_HANDSHAKE_TIMEOUT = 10.0
MAX_REDIRECTS = 10
DEFAULT_MAX_BYTES = MAX_RESOURCE_BYTES
USER_AGENT = f"Ignition/fpvm-{__version__}"
ACCEPT = "application/vnd.coreos.ignition+json;version=3.6.0, */*;q=0.1"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ProxySettings:
    """``ignition.proxy``: proxy URLs for http and https requests, and hosts that bypass them."""

    http_proxy: str | None = None
    https_proxy: str | None = None
    no_proxy: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchOptions:
    """How to fetch: upstream's defaults, plus the knobs tests and the guest need.

    Timeouts are in seconds; 0 or None means "no limit" as in the config. ``budget`` is shared, not
    copied: options derived with ``dataclasses.replace`` spend from the same boot-wide budget.
    """

    response_header_timeout: float | None = DEFAULT_RESPONSE_HEADER_TIMEOUT
    total_timeout: float | None = DEFAULT_TOTAL_TIMEOUT
    budget: Budget = field(default_factory=Budget, compare=False)
    initial_backoff: float = INITIAL_BACKOFF
    max_backoff: float = MAX_BACKOFF
    dial_timeout: float = DIAL_TIMEOUT
    max_redirects: int = MAX_REDIRECTS
    max_bytes: int = DEFAULT_MAX_BYTES
    retry_codes: tuple[int, ...] = ()
    proxy: ProxySettings = field(default_factory=ProxySettings)
    ssl_context: ssl.SSLContext | None = None
    user_agent: str = USER_AGENT
    sleep: Callable[[float], None] = time.sleep


class _Retry(Exception):
    """One attempt failed in a way that is retried (a connection error)."""


class _Watchdog:
    """Shuts a connection's socket down when a deadline passes, so no read can outlive its budget.

    Socket timeouts alone bound each ``recv`` but not a server that trickles bytes; the watchdog
    bounds the whole wait.
    """

    def __init__(self, sock: socket.socket | None, seconds: float | None) -> None:
        self.fired = False
        self._sock = sock
        self._timer: threading.Timer | None = None
        if seconds is not None:
            self._timer = threading.Timer(max(seconds, 0.0), self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _budget(*limits: float | None) -> float | None:
    present = [x for x in limits if x is not None]
    return min(present) if present else None


@dataclass
class _Clock:
    """The time one fetch has: its own ``httpTotal`` within what is left of the boot's budget."""

    budget: Budget
    end: float | None  # httpTotal's end, on the budget's clock

    @classmethod
    def start(cls, options: FetchOptions) -> _Clock:
        budget = options.budget
        total = options.total_timeout or None
        return cls(budget, None if total is None else budget.clock() + total)

    def remaining(self) -> float | None:
        own = None if self.end is None else self.end - self.budget.clock()
        return _budget(own, self.budget.remaining())

    def budget_binds(self) -> bool:
        """Whether the boot's budget, not this fetch's httpTotal, is what ran out."""
        left = self.budget.remaining()
        return left is not None and (self.end is None or left <= self.end - self.budget.clock())

    def expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0


def get(
    url: str,
    headers: Sequence[tuple[str, str]] = (),
    options: FetchOptions | None = None,
) -> bytes:
    """GET ``url`` with upstream's retry loop and return the body (at most ``options.max_bytes``)."""
    opts = options or FetchOptions()
    opts.budget.begin()
    try:
        return _get(url, headers, opts)
    finally:
        opts.budget.end()


def _get(url: str, headers: Sequence[tuple[str, str]], opts: FetchOptions) -> bytes:
    clock = _Clock.start(opts)
    if clock.expired():
        raise SourceError(f"unable to fetch resource in time: GET {_redact(url)} ({_spent(opts.budget)})")
    request_headers = _request_headers(headers, opts)
    backoff = opts.initial_backoff
    attempt = 0
    last = ""
    while True:
        attempt += 1
        try:
            status, response, conn, sock = _attempt(url, request_headers, opts, clock)
        except _Retry as exc:
            # An attempt cut short by the overall deadline says less than the failure before it.
            if not last or not clock.expired():
                last = str(exc)
        else:
            try:
                if status in (200, 204):
                    return _read_body(response, sock, opts, clock, url)
                if status >= 500 or status in opts.retry_codes:
                    last = f"HTTP {status}"
                elif status == 404:
                    raise SourceError(f"resource not found: GET {_redact(url)} returned HTTP 404")
                else:
                    raise SourceError(f"failed to fetch resource: GET {_redact(url)} returned HTTP {status}")
            finally:
                response.close()
                conn.close()
        left = clock.remaining()
        if left is not None and left <= backoff:
            why = f"; {_spent(opts.budget)}" if clock.budget_binds() else ""
            raise SourceError(
                f"unable to fetch resource in time: GET {_redact(url)} "
                f"(after {attempt} attempt{'s' if attempt > 1 else ''}; last error: {last}{why})"
            )
        opts.sleep(backoff)
        backoff = min(backoff * 2, opts.max_backoff)


def _spent(budget: Budget) -> str:
    limit = "unlimited" if budget.deadline is None else f"{budget.deadline:g} s"
    return f"the boot's {limit} for fetching all resources is spent"


def _redact(url: str) -> str:
    """The URL without credentials, for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _canonical(name: str) -> str:
    """Go's CanonicalMIMEHeaderKey, so that "x-foo" and "X-Foo" are the same header as upstream."""
    return "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))


def _request_headers(headers: Sequence[tuple[str, str]], opts: FetchOptions) -> dict[str, str]:
    result = {
        "User-Agent": opts.user_agent,
        "Accept-Encoding": "identity",
        "Accept": ACCEPT,
    }
    for name, value in headers:
        result[_canonical(name)] = value
    return result


def _split(url: str) -> urllib.parse.SplitResult:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        raise SourceError(f"unable to parse url {_redact(url)!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise SourceError(
            f'failed to fetch resource: GET {_redact(url)}: unsupported protocol scheme "{parts.scheme}"'
        )
    if not parts.hostname:
        raise SourceError(f"unable to parse url {url!r}: no host")
    return parts


_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


def _target(parts: urllib.parse.SplitResult) -> str:
    """The request target; characters http.client refuses (spaces...) are escaped as Go's URL.String does."""
    path = urllib.parse.quote(parts.path or "/", safe=_PATH_SAFE)
    query = urllib.parse.quote(parts.query, safe=_PATH_SAFE + "?")
    return path + (f"?{query}" if query else "")


def _attempt(
    url: str, headers: dict[str, str], opts: FetchOptions, clock: _Clock
) -> tuple[int, http.client.HTTPResponse, http.client.HTTPConnection, socket.socket | None]:
    """One ``client.Do``: request, follow redirects; the caller reads or closes the response."""
    current = url
    send = dict(headers)
    for _hop in range(opts.max_redirects + 1):
        parts = _split(current)
        opts.budget.attempt()
        conn, target, proxy_headers = _connect(parts, opts, clock)
        try:
            response, sock = _request(conn, parts, target, {**send, **proxy_headers}, opts, clock)
        except BaseException:
            conn.close()
            raise
        location = response.getheader("Location")
        if response.status in _REDIRECTS and location:
            conn.close()
            current = urllib.parse.urljoin(current, location)
            # Upstream's CheckRedirect empties the header set: nothing of ours follows a redirect.
            send = {}
            continue
        return response.status, response, conn, sock
    raise SourceError(
        f"failed to fetch resource: GET {_redact(url)}: stopped after {opts.max_redirects} redirects"
    )


def _request(
    conn: http.client.HTTPConnection,
    parts: urllib.parse.SplitResult,
    target: str,
    headers: dict[str, str],
    opts: FetchOptions,
    clock: _Clock,
) -> tuple[http.client.HTTPResponse, socket.socket | None]:
    send = dict(headers)
    if parts.username is not None and "Authorization" not in send:
        userinfo = urllib.parse.unquote(parts.username) + ":" + urllib.parse.unquote(parts.password or "")
        send["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
    try:
        conn.connect()
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _Retry(f"dial {parts.hostname}: {exc}") from None
    header_budget = _budget(opts.response_header_timeout or None, clock.remaining())
    # http.client forgets the socket once a "Connection: close" response arrives; keep our own handle.
    sock = conn.sock
    watchdog = _Watchdog(sock, header_budget)
    try:
        if sock is not None:  # the dial timeout no longer applies once connected
            sock.settimeout(max(header_budget, 0.001) if header_budget is not None else None)
        conn.putrequest("GET", target, skip_accept_encoding=True)
        for name, value in send.items():
            conn.putheader(name, value)
        conn.endheaders()
        return conn.getresponse(), sock
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if watchdog.fired or isinstance(exc, TimeoutError):
            if clock.expired():  # the overall deadline, not the header timeout: get() reports it
                raise _Retry("timeout awaiting response headers") from None
            raise SourceError(
                f"unable to fetch resource in time: GET {_redact(parts.geturl())}: timeout awaiting "
                f"response headers (httpResponseHeaders: {opts.response_header_timeout:g} s)"
            ) from None
        raise _Retry(f"{type(exc).__name__}: {exc}") from None
    finally:
        watchdog.cancel()


def _connect(
    parts: urllib.parse.SplitResult, opts: FetchOptions, clock: _Clock
) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """A connection to the server or its proxy, the request target, and headers for the proxy."""
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    timeout = _budget(opts.dial_timeout, clock.remaining())
    timeout = max(timeout, 0.001) if timeout is not None else None
    proxy = proxy_for(parts.scheme, host, port, opts.proxy)
    target = _target(parts)
    if proxy is None:
        if parts.scheme == "https":
            return (
                http.client.HTTPSConnection(host, port, timeout=timeout, context=_context(opts)),
                target,
                {},
            )
        return http.client.HTTPConnection(host, port, timeout=timeout), target, {}
    proxy_host = proxy.hostname or ""
    proxy_port = proxy.port or (443 if proxy.scheme == "https" else 80)
    auth: dict[str, str] = {}
    if proxy.username is not None:
        userinfo = urllib.parse.unquote(proxy.username) + ":" + urllib.parse.unquote(proxy.password or "")
        auth["Proxy-Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
    if parts.scheme == "https":
        if proxy.scheme != "http":
            raise SourceError(
                f"{proxy.scheme} proxies for https resources are not supported by the fpvm guest "
                "(use an http:// proxy; the tunnel is still TLS end to end)"
            )
        tunnel = http.client.HTTPSConnection(proxy_host, proxy_port, timeout=timeout, context=_context(opts))
        tunnel.set_tunnel(host, port, headers=auth)
        return tunnel, target, {}
    absolute = urllib.parse.urlunsplit(("http", parts.netloc.rpartition("@")[2], target, "", ""))
    if proxy.scheme == "https":
        return (
            http.client.HTTPSConnection(proxy_host, proxy_port, timeout=timeout, context=_context(opts)),
            absolute,
            auth,
        )
    return http.client.HTTPConnection(proxy_host, proxy_port, timeout=timeout), absolute, auth


def _context(opts: FetchOptions) -> ssl.SSLContext:
    return opts.ssl_context or ssl.create_default_context()


def _read_body(
    response: http.client.HTTPResponse,
    sock: socket.socket | None,
    opts: FetchOptions,
    clock: _Clock,
    url: str,
) -> bytes:
    length = response.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > opts.max_bytes:
        raise SourceError(f"resource {_redact(url)} is larger than the limit of {opts.max_bytes} bytes")
    watchdog = _Watchdog(sock, clock.remaining())
    if sock is not None:
        left = clock.remaining()
        sock.settimeout(max(left, 0.001) if left is not None else None)
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in _chunks(response):
            size += len(chunk)
            if size > opts.max_bytes:
                raise SourceError(
                    f"resource {_redact(url)} is larger than the limit of {opts.max_bytes} bytes"
                )
            chunks.append(chunk)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if watchdog.fired or isinstance(exc, TimeoutError):
            raise SourceError(
                f"unable to fetch resource in time: GET {_redact(url)} (reading body)"
            ) from None
        raise SourceError(f"error reading {_redact(url)}: {type(exc).__name__}: {exc}") from None
    finally:
        watchdog.cancel()
    if watchdog.fired:
        raise SourceError(f"unable to fetch resource in time: GET {_redact(url)} (reading body)")
    return b"".join(chunks)


def _chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    while True:
        chunk = response.read(_CHUNK)
        if not chunk:
            return
        yield chunk


# --- proxies (golang.org/x/net/http/httpproxy) ---------------------------------------------------------


def _parse_proxy(value: str) -> urllib.parse.SplitResult:
    try:
        parsed = urllib.parse.urlsplit(value)
        if not parsed.scheme or not parsed.netloc:
            parsed = urllib.parse.urlsplit("http://" + value)
        parsed.port  # noqa: B018 -- validates the port
    except ValueError as exc:
        raise SourceError(f"invalid proxy address {value!r}: {exc}") from None
    if not parsed.hostname:
        raise SourceError(f"invalid proxy address {value!r}")
    return parsed


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _bypass(host: str, port: int, no_proxy: Sequence[str]) -> bool:
    """Go's httpproxy ``useProxy`` negated: loopback, ``*`` and matching noProxy entries bypass."""
    host = host.lower().strip()
    if host == "localhost":
        return True
    ip = _ip(host)
    if ip is not None and ip.is_loopback:
        return True
    port_text = str(port)
    for raw in ",".join(no_proxy).split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                network = None
            if network is not None:
                if ip is not None and ip in network:
                    return True
                continue
        entry_host, entry_port = entry, ""
        if entry.startswith("["):
            close = entry.find("]")
            if close > 0 and entry[close + 1 : close + 2] == ":":
                entry_host, entry_port = entry[1:close], entry[close + 2 :]
        elif entry.count(":") == 1:
            entry_host, entry_port = entry.split(":")
        if not entry_host:
            continue
        entry_ip = _ip(entry_host)
        if entry_ip is not None:
            if ip is not None and ip == entry_ip and entry_port in ("", port_text):
                return True
            continue
        if entry_host.startswith("*."):
            entry_host = entry_host[1:]
        match_host = not entry_host.startswith(".")
        suffix = entry_host if not match_host else "." + entry_host
        if (host.endswith(suffix) or (match_host and host == suffix[1:])) and entry_port in ("", port_text):
            return True
    return False


def proxy_for(scheme: str, host: str, port: int, settings: ProxySettings) -> urllib.parse.SplitResult | None:
    """The proxy to use for a request, or None (direct), following Go's httpproxy rules."""
    value = settings.https_proxy if scheme == "https" else settings.http_proxy
    if not value:
        return None
    if _bypass(host, port, settings.no_proxy):
        return None
    return _parse_proxy(value)
