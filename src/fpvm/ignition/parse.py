"""Reading a config of any supported version: the same steps, in the same order, as upstream.

1. empty input -> "not a config (empty)"; 2. JSON syntax; 3. a minimal decode of
``ignition.version`` (wrong type -> error); 4. the version must parse as semver ("invalid config
version (couldn't parse)") and be one upstream accepts ("unsupported config version");
5. a full decode with that version's fields (wrong JSON types are errors, unknown keys warnings);
6. that version's validation; 7. translation to the newest spec.

Upstream's parser is its newest package, 3.7.0-experimental at the time of writing, which accepts
3.0.0 to 3.6.0 and 3.7.0-experimental (3.6.0-experimental and older experimental versions are
refused). The model has the 3.6.0 shape, which 3.7.0-experimental shares.
"""

from __future__ import annotations

from typing import Any

from fpvm.ignition import decode, gocompat, jsonread, translate, validate
from fpvm.ignition.errors import IgnitionError, Report
from fpvm.ignition.model import Config, Version

EMPTY = "not a config (empty)"
INVALID_VERSION = "invalid config version (couldn't parse)"
UNKNOWN_VERSION = "unsupported config version"

SUPPORTED: dict[gocompat.SemVer, Version] = {
    **{gocompat.SemVer(3, minor, 0): (3, minor) for minor in range(7)},
    gocompat.SemVer(3, 7, 0, "experimental"): (3, 7),
}

# Guard against pathological input sizes before any work is done (upstream has no limit; a config
# this large could not come through fw_cfg or a data URL sensibly anyway).
MAX_BYTES = 256 * 1024 * 1024


def _run(data: bytes) -> tuple[Config | None, Report]:
    report = Report()
    if len(data) == 0:
        report.error("$", EMPTY)
        return None, report
    if len(data) > MAX_BYTES:
        report.error("$", f"config too large ({len(data)} bytes, limit {MAX_BYTES})")
        return None, report
    try:
        raw: Any = jsonread.loads(data)
    except jsonread.JSONSyntaxError as exc:
        report.error("$", str(exc))
        return None, report
    declared = decode.read_version(raw, report)
    if declared is None:
        return None, report
    report.version = declared
    semver = gocompat.parse_semver(declared)
    if semver is None:
        report.error("$.ignition.version", INVALID_VERSION)
        return None, report
    version = SUPPORTED.get(semver)
    if version is None:
        report.error("$.ignition.version", UNKNOWN_VERSION)
        return None, report
    decoded = Report(version=declared)
    cfg, present = decode.decode_config(raw, version, decoded)
    if not decoded.valid:
        report.entries.extend(decoded.errors)
        return None, report
    report.extend(decoded)
    translate.fill_plain_strings(cfg, version, present)
    validate.validate(cfg, version, report, present)
    if not report.valid:
        return None, report
    return translate.translate(cfg, version), report


INTERNAL = "internal error while reading the config"


def _guarded(data: bytes) -> tuple[Config | None, Report]:
    """``_run``, turning any unexpected failure into a finding: the guest must never die on input."""
    try:
        return _run(data)
    except Exception as exc:
        report = Report()
        report.error("$", f"{INTERNAL}: {type(exc).__name__}: {exc}")
        return None, report


def check(data: bytes) -> Report:
    """Every finding about ``data``; never raises for bad input. ``report.valid`` is the verdict."""
    return _guarded(data)[1]


def parse_with_report(data: bytes) -> tuple[Config, Report]:
    """The config translated to the newest spec, with its warnings; raises ``IgnitionError``."""
    cfg, report = _guarded(data)
    if cfg is None:
        raise IgnitionError(report)
    return cfg, report


def parse(data: bytes) -> Config:
    """The config translated to the newest spec; raises ``IgnitionError`` (with ``.report``)."""
    return parse_with_report(data)[0]
