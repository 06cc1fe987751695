"""Bringing a config written for an older spec up to the newest, as upstream's translators do.

The model already has the newest shape, so translation is about meaning: fields that older specs
declared as plain strings become present-but-empty rather than absent, special mode bits that
older specs never applied are masked off (upstream's fix for coreos/ignition#2024), and the
version becomes the newest one.
"""

from __future__ import annotations

from fpvm.ignition.model import NEWEST, Config, Directory, File, Version

NEWEST_VERSION = f"{NEWEST[0]}.{NEWEST[1]}.0"
EXPERIMENTAL_VERSION = "3.7.0-experimental"


def fill_plain_strings(cfg: Config, version: Version, present: set[str]) -> None:
    """Give fields that were non-pointer strings in ``version`` their Go zero value ("" not None)."""
    if version < (3, 1):
        for ca in cfg.ignition.security.tls.certificate_authorities:
            if ca.source is None:
                ca.source = ""
    if version < (3, 3):
        for link in cfg.storage.links:
            if link.target is None:
                link.target = ""
        for raid in cfg.storage.raid:
            if raid.level is None:
                raid.level = ""
        for i, luks in enumerate(cfg.storage.luks):
            custom = luks.clevis.custom
            if f"$.storage.luks[{i}].clevis.custom" in present:
                custom.pin = custom.pin if custom.pin is not None else ""
                custom.config = custom.config if custom.config is not None else ""


def translate(cfg: Config, version: Version) -> Config:
    """Translate ``cfg`` (validated at ``version``) to the newest spec, in place."""
    if version < (3, 6):
        nodes: list[File | Directory] = [*cfg.storage.files, *cfg.storage.directories]
        for node in nodes:
            if node.mode is not None:
                node.mode &= ~0o7000
    # Upstream writes its MaxVersion's canonical string ("03.2.0" becomes "3.6.0").
    cfg.ignition.version = EXPERIMENTAL_VERSION if version > NEWEST else NEWEST_VERSION
    return cfg
