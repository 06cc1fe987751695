"""Fetch settings from a config: ``ignition.timeouts``, ``ignition.proxy`` and trusted CAs.

``options_from_config(config)`` turns them into the ``FetchOptions`` the one resource layer
(``fpvm.ignition.resources``: fetch, decode, decompress, verify) uses for http(s). Kept apart from that
layer because it loads ``ssl``, which a config of ``data:`` URLs never needs.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import replace

from fpvm.ignition import http as httpfetch
from fpvm.ignition.http import FetchOptions, ProxySettings
from fpvm.ignition.model import Config
from fpvm.ignition.resources import fetch
from fpvm.ignition.srcerrors import SourceError

__all__ = ["FetchOptions", "ProxySettings", "SourceError", "add_certificates", "options_from_config"]


def options_from_config(
    config: Config,
    base: FetchOptions | None = None,
    *,
    path: str = "$.ignition",
    ca_cache: dict[str, bytes] | None = None,
) -> FetchOptions:
    """``base`` updated with the config's timeouts, proxy and certificate authorities.

    As upstream, the CAs are fetched with the new timeouts and proxy already in force, and they are
    added to the system's trust store rather than replacing it. ``ca_cache`` (source -> bytes) plays
    the part of upstream's per-fetcher CA cache, so a CA is fetched once however often settings change.
    """
    opts = base or FetchOptions()
    ign = config.ignition
    header = ign.timeouts.http_response_headers
    total = ign.timeouts.http_total
    opts = replace(
        opts,
        response_header_timeout=httpfetch.DEFAULT_RESPONSE_HEADER_TIMEOUT
        if header is None
        else float(header),
        total_timeout=httpfetch.DEFAULT_TOTAL_TIMEOUT if total is None else float(total),
        proxy=ProxySettings(ign.proxy.http_proxy, ign.proxy.https_proxy, tuple(ign.proxy.no_proxy)),
    )
    cas = ign.security.tls.certificate_authorities
    if not cas:
        return opts
    context = ssl.create_default_context()
    for index, ca in enumerate(cas):
        where = f"{path}.security.tls.certificateAuthorities[{index}]"
        if ca_cache is not None and ca.source is not None and ca.source in ca_cache:
            blob = ca_cache[ca.source]
        else:
            blob = fetch(ca, opts, path=where)
            if ca_cache is not None and ca.source is not None:
                ca_cache[ca.source] = blob
        add_certificates(context, blob, where)
    return replace(opts, ssl_context=context)


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)


def add_certificates(context: ssl.SSLContext, blob: bytes, path: str = "$") -> None:
    """Trust every certificate of a PEM bundle; anything that is not a certificate is an error."""
    blocks = list(_PEM_BLOCK.finditer(blob))
    leftover = _PEM_BLOCK.sub(b"", blob).strip()
    if not blocks or leftover:
        raise SourceError("unable to decode PEM block in certificate authority", path)
    for block in blocks:
        if block.group(1) != b"CERTIFICATE":
            raise SourceError(
                f"unable to parse CA: PEM block {block.group(1).decode()!r} is not a certificate", path
            )
        try:
            context.load_verify_locations(cadata=block.group(0).decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
            raise SourceError(f"unable to parse CA: {exc}", path) from None
