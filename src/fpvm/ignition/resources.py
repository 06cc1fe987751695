"""The one resource layer: fetch, decode, decompress and verify an Ignition ``Resource``.

Config references (``ignition.config.merge/replace``, ``fpvm.ignition.resolve``), file contents and
appends (``fpvm.guest.plan``) and fpvm's mount table (``fpvm.guest.mounts``) all read their bytes
here, so they cannot disagree about what a source means. The order is upstream's
``decompressCopyHashAndVerify`` (coreos/ignition ``internal/resource/url.go``):

1. fetch the raw bytes: a ``data:`` URL (``fpvm.ignition.dataurl``, the vincent-petithory/dataurl
   decoder upstream uses) or http/https (``fpvm.ignition.http``, imported only for those schemes so
   that a config of ``data:`` URLs never loads ``http.client``/``ssl``);
2. decompress (only ``gzip`` exists): every member, as Go's multistream ``gzip.Reader`` does, and a
   truncated stream, a bad CRC-32/length trailer or bytes after the last member are errors; the
   output is inflated in bounded steps and stops at ``MAX_RESOURCE_BYTES`` (64 MiB) + 1 byte, so a
   gzip bomb costs at most that much memory;
3. verify ``verification.hash`` (``sha512-``/``sha256-<hex>``) over the *decompressed* bytes.

``tftp``, ``s3``, ``gs`` and ``arn`` are valid in a config but the fpvm guest has no client for
them: fetching one is a clear error rather than a silent skip.

Network time is bounded per boot, not per resource: one ``Budget`` (default 300 s of fetching) is
shared by everything one boot fetches (config references in ``resolve`` and contents in ``plan``).
Every error is a ``SourceError`` naming the JSON path of the resource.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fpvm.ignition.budget import DEFAULT_DEADLINE, MAX_RESOURCE_BYTES, Budget
from fpvm.ignition.srcerrors import SourceError

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only (http pulls in ssl)
    from fpvm.ignition.http import FetchOptions
    from fpvm.ignition.model import HTTPHeader, Resource

__all__ = [
    "DEFAULT_DEADLINE",
    "MAX_RESOURCE_BYTES",
    "Budget",
    "SourceError",
    "decompress",
    "fetch",
    "fetch_url",
    "parse_hash",
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
_HASH_NAMES = ("sha512", "sha256")
_INFLATE_STEP = 1024 * 1024  # output per inflate call: memory stays bounded even below the cap


def fetch(
    resource: Resource,
    options: FetchOptions | None = None,
    *,
    path: str = "$",
    limit: int | None = None,
    hash_as_hex: bool = False,
) -> bytes:
    """The decompressed, verified bytes of ``resource``; ``path`` names it in error messages."""
    return fetch_url(
        resource.source,
        compression=resource.compression,
        verification=resource.verification.hash,
        headers=resource.http_headers,
        options=options,
        path=path,
        limit=limit,
        hash_as_hex=hash_as_hex,
    )


def fetch_url(
    url: str | None,
    *,
    compression: str | None = None,
    verification: str | None = None,
    headers: Sequence[HTTPHeader | tuple[str, str | None]] = (),
    options: FetchOptions | None = None,
    path: str = "$",
    limit: int | None = None,
    hash_as_hex: bool = False,
) -> bytes:
    """Fetch ``url``, decompress per ``compression``, check the ``sha512-…``/``sha256-…`` hash.

    ``limit`` caps the bytes after decompression (default: ``options.max_bytes``, else 64 MiB).
    ``hash_as_hex`` compares the digest as upstream does for config references (lower-case hex text)
    instead of as bytes (file contents). An empty source yields no bytes and no check, exactly as
    upstream (it treats "" as "nothing").
    """
    try:
        if url is None:
            raise SourceError("source is required")
        pairs = _header_pairs(headers)
        expected = parse_hash(verification)
        if url == "":
            return b""
        if limit is None:
            limit = options.max_bytes if options is not None else MAX_RESOURCE_BYTES
        scheme = _scheme(url)
        if scheme == "data":
            from fpvm.ignition import dataurl

            raw = dataurl.decode(url)
            if not compression and len(raw) > limit:
                raise SourceError(f"resource of {len(raw)} bytes is larger than the limit of {limit} bytes")
        elif scheme in ("http", "https"):
            from dataclasses import replace

            from fpvm.ignition import http as httpfetch

            opts = options or httpfetch.FetchOptions()
            if not compression and opts.max_bytes > limit:
                opts = replace(opts, max_bytes=limit)
            raw = httpfetch.get(url, pairs, opts)
        elif scheme in UNSUPPORTED_SCHEMES:
            raise SourceError(
                f"{scheme}:// sources ({UNSUPPORTED_SCHEMES[scheme]}) are valid Ignition but not supported "
                "by the fpvm guest; serve the resource over http(s) or inline it as a data: URL"
            )
        else:
            raise SourceError(f"unsupported source scheme {scheme!r}")
        data = decompress(raw, compression, limit=limit)
        if expected is not None:
            verify(data, expected, hash_as_hex=hash_as_hex)
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
        name, value = header if isinstance(header, tuple) else (header.name, header.value)
        if not name:
            raise SourceError("HTTP header name can't be empty")
        if not value:
            raise SourceError(f"unable to parse HTTP header {name!r}: it has no value")
        pairs.append((name, value))
    return pairs


def parse_hash(verification: str | None) -> tuple[str, str] | None:
    """``("sha512", "<hex>")`` from ``sha512-<hex>``; checked before fetching, as upstream does."""
    if verification is None:
        return None
    function, sep, digest = verification.partition("-")
    if not sep:
        raise SourceError("malformed hash specifier")
    if function not in _HASH_NAMES:
        raise SourceError(f"unrecognized hash function {function!r}")
    try:
        bytes.fromhex(digest)
    except ValueError:
        raise SourceError(f"malformed hash specifier: {digest!r} is not hexadecimal") from None
    return function, digest


def verify(data: bytes, expected: tuple[str, str] | str, *, hash_as_hex: bool = False) -> None:
    """Raise ``SourceError`` unless ``data`` has the expected hash (``"sha512-<hex>"`` or parsed).

    Upstream compares file contents as decoded bytes (``bytes.Equal`` after ``hex.DecodeString``:
    upper-case hex verifies) but a config reference as text (``AssertValid``: only the lower-case hex
    it computes matches); ``hash_as_hex`` selects the latter.
    """
    parsed = parse_hash(expected) if isinstance(expected, str) else expected
    assert parsed is not None
    function, digest = parsed
    import hashlib  # loads OpenSSL: only when something is verified, never on podman's boot path

    calculated = hashlib.new(function, data).hexdigest()
    same = calculated == digest if hash_as_hex else bytes.fromhex(calculated) == bytes.fromhex(digest)
    if not same:
        raise SourceError(f"hash verification failed (calculated {calculated} but expected {digest})")


def decompress(data: bytes, compression: str | None, *, limit: int = MAX_RESOURCE_BYTES) -> bytes:
    """Undo ``compression`` ("" or None: nothing; "gzip": every member); at most ``limit`` bytes out.

    Go's ``gzip.Reader`` (multistream, as upstream reads it) is the reference: members are read until
    the input ends; a member cut short, a CRC-32 or length trailer that does not match, or anything
    after the last member that is not another gzip member is an error. Inflating stops as soon as the
    output would pass ``limit``, so memory stays bounded whatever the input claims.
    """
    if not compression:
        return data
    if compression != "gzip":
        raise SourceError(f"invalid compression method {compression!r}")
    import zlib

    if not data:
        raise SourceError("invalid gzip data: EOF")
    out: list[bytes] = []
    size = 0
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            while not inflater.eof:
                chunk = inflater.decompress(rest, min(_INFLATE_STEP, limit + 1 - size))
                rest = inflater.unconsumed_tail
                if not chunk and not rest:
                    break  # input used up and nothing pending: the member is cut short
                size += len(chunk)
                if size > limit:
                    raise SourceError(f"decompressed resource is larger than the limit of {limit} bytes")
                out.append(chunk)
        except zlib.error as exc:
            raise SourceError(f"invalid gzip data: {exc}") from None
        if not inflater.eof:
            raise SourceError("invalid gzip data: unexpected EOF")
        rest = inflater.unused_data
    return b"".join(out)
