"""Follow ``ignition.config.replace`` and ``ignition.config.merge`` as upstream's RenderConfig does.

* ``replace`` wins: when its source is set, the referenced config is fetched, rendered in turn, and
  becomes the result; the parent's ``merge`` list is not looked at.
* Otherwise every ``merge`` entry is fetched in order, rendered (depth first: its own references are
  resolved before it is merged) and merged into the result so far (``fpvm.ignition.merge``).
* A referenced config may declare any spec version the parser accepts (3.0.0 ... 3.6.0); upstream
  parses each one on its own and translates it to the newest spec, so versions need not match.
* ``verification.hash`` is checked on the fetched, decompressed bytes before parsing, compared as the
  lower-case hex string upstream computes.
* Fetch settings evolve as upstream's fetcher does: a replacing config's timeouts/proxy/CAs take over;
  before a merged config is rendered, the settings of "result so far merged with it" apply.

Upstream has no guard against a config that (indirectly) references itself and would loop until its
timeouts give up, nor against fan-out (10 merges per level are 1 111 fetches at depth 3); fpvm stops at
a cycle, at ``max_depth`` nested references, or at ``max_references`` references in total (default
100, all levels together: 10 merges of 10 merges is the most a sane config needs), with the chain in
the message. The ``Budget``'s deadline (300 s of fetching per boot) is shared with the contents
``plan`` fetches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace

from fpvm.ignition.errors import IgnitionError, Report
from fpvm.ignition.http import FetchOptions
from fpvm.ignition.merge import merge
from fpvm.ignition.model import Config, Resource
from fpvm.ignition.resources import Budget, fetch_url, verify
from fpvm.ignition.sources import options_from_config
from fpvm.ignition.srcerrors import SourceError

DEFAULT_MAX_DEPTH = 10
DEFAULT_MAX_REFERENCES = 100

Fetcher = Callable[[Resource, FetchOptions], bytes]
Parser = Callable[[bytes], Config]


def fetch_config_bytes(resource: Resource, options: FetchOptions) -> bytes:
    """Fetch a referenced config as upstream does: headers and compression, no hash (checked later)."""
    return fetch_url(
        resource.source,
        compression=resource.compression,
        headers=resource.http_headers,
        options=options,
    )


def _label(source: str) -> str:
    """A short, secret-free name for a source in messages (data URLs may hold credentials)."""
    if source.lower().startswith("data:"):
        return f"data URL (sha512 {hashlib.sha512(source.encode()).hexdigest()[:12]})"
    return source


@dataclass
class _State:
    """Upstream's fetcher is one mutable object whose settings each step updates; so is this."""

    options: FetchOptions
    fetcher: Fetcher
    parser: Parser | None
    max_depth: int
    report: Report | None
    ca_cache: dict[str, bytes]
    max_references: int = DEFAULT_MAX_REFERENCES
    references: int = 0


def resolve(
    config: Config,
    *,
    fetcher: Fetcher | None = None,
    parser: Parser | None = None,
    options: FetchOptions | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
    report: Report | None = None,
    budget: Budget | None = None,
    max_references: int = DEFAULT_MAX_REFERENCES,
) -> Config:
    """The config after following its replace/merge references.

    ``fetcher`` and ``parser`` default to the real ones; ``options`` is the base fetch behaviour, to
    which the config's own timeouts, proxy and CAs are applied first (as upstream does). Warnings of
    referenced configs go to ``report`` when given. ``budget`` (else ``options.budget``, else a new
    one) bounds the time and the number of references; pass the boot's one so that the contents
    ``plan`` fetches later share it. Errors are ``IgnitionError``s naming the chain of references that
    led to the failing one.
    """
    ca_cache: dict[str, bytes] = {}
    base = options or FetchOptions()
    if budget is not None:
        base = replace(base, budget=budget)
    state = _State(
        options=options_from_config(config, base, ca_cache=ca_cache),
        fetcher=fetcher or fetch_config_bytes,
        parser=parser,
        max_depth=max_depth,
        report=report,
        ca_cache=ca_cache,
        max_references=max_references,
    )
    return _render(config, state, ["<config>"])


def _render(config: Config, state: _State, chain: list[str]) -> Config:
    refs = config.ignition.config
    if refs.replace.source is not None:
        replacing = _fetch_referenced(refs.replace, "$.ignition.config.replace", state, chain)
        state.options = options_from_config(replacing, state.options, ca_cache=state.ca_cache)
        return _render(replacing, state, [*chain, _label(refs.replace.source)])
    merged = config
    for index, ref in enumerate(refs.merge):
        child = _fetch_referenced(ref, f"$.ignition.config.merge[{index}]", state, chain)
        state.options = options_from_config(merge(merged, child), state.options, ca_cache=state.ca_cache)
        child = _render(child, state, [*chain, _label(ref.source or "")])
        merged = merge(merged, child)
    return merged


def _fetch_referenced(ref: Resource, path: str, state: _State, chain: list[str]) -> Config:
    source = ref.source if ref.source is not None else ""
    label = _label(source)
    trail = " -> ".join([*chain, label])
    if label in chain[1:]:
        raise SourceError(f"config reference cycle: {trail}", path)
    if len(chain) > state.max_depth:
        raise SourceError(f"config references nested deeper than {state.max_depth}: {trail}", path)
    state.references += 1
    if state.references > state.max_references:
        raise SourceError(
            f"more than {state.max_references} config references in total (merge/replace fan-out): {trail}",
            path,
        )
    try:
        data = state.fetcher(ref, state.options)
        if ref.verification.hash is not None:
            verify(data, ref.verification.hash, hash_as_hex=True)  # upstream's AssertValid: hex text
    except SourceError as exc:
        raise SourceError(f"{exc.message} (fetching {trail})", path) from None
    try:
        if state.parser is not None:
            return state.parser(data)
        from fpvm.ignition.parse import parse_with_report  # parse imports much; only when needed

        child, found = parse_with_report(data)
    except IgnitionError as exc:
        raise IgnitionError(_prefixed(exc.report, path, trail)) from None
    if state.report is not None:
        state.report.extend(_prefixed(found, path, trail))
    return child


def _prefixed(inner: Report, path: str, trail: str) -> Report:
    """The referenced config's findings, attributed to the reference and naming the chain."""
    out = Report(version=inner.version)
    for entry in inner.entries:
        message = f"in config fetched via {trail}: {entry.path}: {entry.message}"
        if entry.kind == "error":
            out.error(path, message)
        else:
            out.warning(path, message)
    return out
