"""Fetch a Resource (file contents, appended data, merged config, CA, key file) as upstream does.

The order is upstream's ``decompressCopyHashAndVerify``: fetch the raw bytes (``data:`` URL or
http/https), decompress them (only ``gzip`` exists), then check ``verification.hash`` against the
*decompressed* bytes. ``tftp``, ``s3``, ``gs`` and ``arn`` are valid in a config but the fpvm guest
has no client for them, so fetching one is a clear error rather than a silent skip.

Entry points: ``fetch(resource, options)`` for model Resources and ``fetch_url(url, ...)`` for
callers that hold the pieces. ``options_from_config(config)`` turns ``ignition.timeouts``,
``ignition.proxy`` and ``ignition.security.tls.certificateAuthorities`` into ``FetchOptions``.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import zlib
from collections.abc import Sequence
from dataclasses import replace

from fpvm.ignition import dataurl
from fpvm.ignition import http as httpfetch
from fpvm.ignition.http import FetchOptions, ProxySettings
from fpvm.ignition.model import Config, HTTPHeader, Resource
from fpvm.ignition.srcerrors import SourceError

__all__ = [
    "FetchOptions",
    "ProxySettings",
    "SourceError",
    "decompress",
    "fetch",
    "fetch_url",
    "options_from_config",
    "verify",
]

UNSUPPORTED_SCHEMES = {
    "tftp": "tftp",
    "s3": "Amazon S3",
    "arn": "Amazon S3 (ARN)",
    "gs": "Google Cloud Storage",
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HASHES = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}


def fetch(resource: Resource, options: FetchOptions | None = None, *, path: str = "$") -> bytes:
    """The decompressed, verified bytes of ``resource``; ``path`` names it in error messages."""
    return fetch_url(
        resource.source,
        compression=resource.compression,
        verification=resource.verification.hash,
        headers=resource.http_headers,
        options=options,
        path=path,
    )


def fetch_url(
    url: str | None,
    *,
    compression: str | None = None,
    verification: str | None = None,
    headers: Sequence[HTTPHeader | tuple[str, str | None]] = (),
    options: FetchOptions | None = None,
    path: str = "$",
) -> bytes:
    """Fetch ``url``, decompress per ``compression``, check the ``sha512-…``/``sha256-…`` hash.

    An empty source yields no bytes and no check, exactly as upstream (it treats "" as "nothing").
    """
    opts = options or FetchOptions()
    try:
        if url is None:
            raise SourceError("source is required")
        pairs = _header_pairs(headers)
        expected = _expected_hash(verification)
        if url == "":
            return b""
        scheme = _scheme(url)
        if scheme == "data":
            raw = dataurl.decode(url)
        elif scheme in ("http", "https"):
            raw = httpfetch.get(url, pairs, opts)
        elif scheme in UNSUPPORTED_SCHEMES:
            raise SourceError(
                f"{scheme}:// sources ({UNSUPPORTED_SCHEMES[scheme]}) are valid Ignition but not supported "
                "by the fpvm guest; serve the resource over http(s) or inline it as a data: URL"
            )
        else:
            raise SourceError(f"unsupported source scheme {scheme!r}")
        data = decompress(raw, compression, limit=opts.max_bytes)
        if expected is not None:
            verify(data, expected)
        return data
    except SourceError as exc:
        if path != "$" and exc.path == "$":
            raise exc.at(path) from None
        raise


def _scheme(url: str) -> str:
    if _CONTROL.search(url):
        raise SourceError("unable to parse url: invalid control character in URL")
    match = _SCHEME.match(url)
    if match is None:
        raise SourceError(f"unable to parse url {url[:60]!r}: missing scheme")
    return match.group(1).lower()


def _header_pairs(headers: Sequence[HTTPHeader | tuple[str, str | None]]) -> list[tuple[str, str]]:
    """Upstream's HTTPHeaders.Parse: every header needs a name and a non-empty value."""
    pairs: list[tuple[str, str]] = []
    for header in headers:
        name, value = (header.name, header.value) if isinstance(header, HTTPHeader) else header
        if not name:
            raise SourceError("HTTP header name can't be empty")
        if not value:
            raise SourceError(f"unable to parse HTTP header {name!r}: it has no value")
        pairs.append((name, value))
    return pairs


def _expected_hash(verification: str | None) -> tuple[str, bytes] | None:
    if verification is None:
        return None
    function, sep, digest = verification.partition("-")
    if not sep:
        raise SourceError("malformed hash specifier")
    if function not in _HASHES:
        raise SourceError(f"unrecognized hash function {function!r}")
    try:
        return function, bytes.fromhex(digest)
    except ValueError:
        raise SourceError(f"malformed hash specifier: {digest!r} is not hexadecimal") from None


def verify(data: bytes, expected: tuple[str, bytes] | str) -> None:
    """Raise ``SourceError`` unless ``data`` has the expected hash (``"sha512-<hex>"`` or parsed)."""
    if isinstance(expected, str):
        parsed = _expected_hash(expected)
        assert parsed is not None
        expected = parsed
    function, digest = expected
    calculated = _HASHES[function](data).digest()
    if calculated != digest:
        raise SourceError(
            f"hash verification failed (calculated {calculated.hex()} but expected {digest.hex()})"
        )


def decompress(data: bytes, compression: str | None, *, limit: int = httpfetch.DEFAULT_MAX_BYTES) -> bytes:
    """Undo ``compression`` ("" or None: nothing; "gzip": every gzip member); at most ``limit`` bytes."""
    if not compression:
        return data
    if compression != "gzip":
        raise SourceError(f"invalid compression method {compression!r}")
    if not data:
        raise SourceError("invalid gzip data: EOF")
    out: list[bytes] = []
    size = 0
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            while rest and not inflater.eof:
                chunk = inflater.decompress(rest, limit + 1 - size)
                size += len(chunk)
                out.append(chunk)
                if size > limit:
                    raise SourceError(f"decompressed resource is larger than the limit of {limit} bytes")
                rest = inflater.unconsumed_tail
        except zlib.error as exc:
            raise SourceError(f"invalid gzip data: {exc}") from None
        if not inflater.eof:
            raise SourceError("invalid gzip data: unexpected EOF")
        rest = inflater.unused_data
    return b"".join(out)


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
