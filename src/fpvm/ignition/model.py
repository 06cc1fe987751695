"""Typed model of an Ignition config at the newest spec (3.6.0; 3.7.0-experimental has the same shape).

Class names follow upstream's Go types so that reading coreos/ignition side by side stays easy;
attributes are the JSON keys in snake_case. Upstream's pointer fields (absent vs. zero) become
``None``-able attributes, lists default to ``[]`` and nested objects to their empty dataclass, so
consumers never need to test for a missing section.

Each field carries its JSON key and the first spec version that knows it (``since``): the parser uses
that table to decide, per input version, which keys are real fields and which are "unused" (a
warning, as upstream), so there is exactly one description of the spec's shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Version = tuple[int, int]

NEWEST: Version = (3, 6)


def _f(key: str, default: Any = None, *, since: Version = (3, 0), factory: Any = None) -> Any:
    """A dataclass field with its JSON key and the spec version that introduced it."""
    meta = {"json": key, "since": since}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --- shared pieces ---------------------------------------------------------------------------------


@dataclass
class Verification:
    hash: str | None = _f("hash")


@dataclass
class HTTPHeader:
    name: str = _f("name", "")
    value: str | None = _f("value")


@dataclass
class Resource:
    """A fetchable blob: file contents/append, merged/replacing config, CA, LUKS key file."""

    source: str | None = _f("source")
    compression: str | None = _f("compression", since=(3, 1))
    http_headers: list[HTTPHeader] = _f("httpHeaders", since=(3, 1), factory=list)
    verification: Verification = _f("verification", factory=Verification)


# --- ignition section ------------------------------------------------------------------------------


@dataclass
class IgnitionConfig:
    merge: list[Resource] = _f("merge", factory=list)
    replace: Resource = _f("replace", factory=Resource)


@dataclass
class Timeouts:
    http_response_headers: int | None = _f("httpResponseHeaders")
    http_total: int | None = _f("httpTotal")


@dataclass
class TLS:
    certificate_authorities: list[Resource] = _f("certificateAuthorities", factory=list)


@dataclass
class Security:
    tls: TLS = _f("tls", factory=TLS)


@dataclass
class Proxy:
    http_proxy: str | None = _f("httpProxy")
    https_proxy: str | None = _f("httpsProxy")
    no_proxy: list[str] = _f("noProxy", factory=list)


@dataclass
class Ignition:
    version: str = _f("version", "")
    config: IgnitionConfig = _f("config", factory=IgnitionConfig)
    timeouts: Timeouts = _f("timeouts", factory=Timeouts)
    security: Security = _f("security", factory=Security)
    proxy: Proxy = _f("proxy", since=(3, 1), factory=Proxy)


# --- storage ---------------------------------------------------------------------------------------


@dataclass
class Partition:
    label: str | None = _f("label")
    number: int = _f("number", 0)
    size_mib: int | None = _f("sizeMiB")
    start_mib: int | None = _f("startMiB")
    type_guid: str | None = _f("typeGuid")
    guid: str | None = _f("guid")
    wipe_partition_entry: bool | None = _f("wipePartitionEntry")
    should_exist: bool | None = _f("shouldExist")
    resize: bool | None = _f("resize", since=(3, 2))


@dataclass
class Disk:
    device: str = _f("device", "")
    wipe_table: bool | None = _f("wipeTable")
    partitions: list[Partition] = _f("partitions", factory=list)


@dataclass
class Raid:
    name: str = _f("name", "")
    level: str | None = _f("level")
    devices: list[str] = _f("devices", factory=list)
    spares: int | None = _f("spares")
    options: list[str] = _f("options", factory=list)


@dataclass
class Filesystem:
    device: str = _f("device", "")
    format: str | None = _f("format")
    path: str | None = _f("path")
    wipe_filesystem: bool | None = _f("wipeFilesystem")
    label: str | None = _f("label")
    uuid: str | None = _f("uuid")
    options: list[str] = _f("options", factory=list)
    mount_options: list[str] = _f("mountOptions", since=(3, 1), factory=list)


@dataclass
class Tang:
    url: str = _f("url", "")
    thumbprint: str | None = _f("thumbprint")
    advertisement: str | None = _f("advertisement", since=(3, 4))


@dataclass
class ClevisCustom:
    pin: str | None = _f("pin")
    config: str | None = _f("config")
    needs_network: bool | None = _f("needsNetwork")


@dataclass
class Clevis:
    tang: list[Tang] = _f("tang", factory=list)
    tpm2: bool | None = _f("tpm2")
    threshold: int | None = _f("threshold")
    custom: ClevisCustom = _f("custom", factory=ClevisCustom)


@dataclass
class Cex:
    enabled: bool | None = _f("enabled")


@dataclass
class Luks:
    name: str = _f("name", "")
    device: str | None = _f("device")
    key_file: Resource = _f("keyFile", factory=Resource)
    label: str | None = _f("label")
    uuid: str | None = _f("uuid")
    options: list[str] = _f("options", factory=list)
    discard: bool | None = _f("discard", since=(3, 4))
    open_options: list[str] = _f("openOptions", since=(3, 4), factory=list)
    wipe_volume: bool | None = _f("wipeVolume")
    clevis: Clevis = _f("clevis", factory=Clevis)
    cex: Cex = _f("cex", since=(3, 5), factory=Cex)


@dataclass
class NodeUser:
    id: int | None = _f("id")
    name: str | None = _f("name")


@dataclass
class NodeGroup:
    id: int | None = _f("id")
    name: str | None = _f("name")


@dataclass
class File:
    path: str = _f("path", "")
    overwrite: bool | None = _f("overwrite")
    user: NodeUser = _f("user", factory=NodeUser)
    group: NodeGroup = _f("group", factory=NodeGroup)
    mode: int | None = _f("mode")
    contents: Resource = _f("contents", factory=Resource)
    append: list[Resource] = _f("append", factory=list)


@dataclass
class Directory:
    path: str = _f("path", "")
    overwrite: bool | None = _f("overwrite")
    user: NodeUser = _f("user", factory=NodeUser)
    group: NodeGroup = _f("group", factory=NodeGroup)
    mode: int | None = _f("mode")


@dataclass
class Link:
    path: str = _f("path", "")
    overwrite: bool | None = _f("overwrite")
    user: NodeUser = _f("user", factory=NodeUser)
    group: NodeGroup = _f("group", factory=NodeGroup)
    target: str | None = _f("target")
    hard: bool | None = _f("hard")


@dataclass
class Storage:
    disks: list[Disk] = _f("disks", factory=list)
    raid: list[Raid] = _f("raid", factory=list)
    filesystems: list[Filesystem] = _f("filesystems", factory=list)
    luks: list[Luks] = _f("luks", since=(3, 2), factory=list)
    files: list[File] = _f("files", factory=list)
    directories: list[Directory] = _f("directories", factory=list)
    links: list[Link] = _f("links", factory=list)


# --- passwd ----------------------------------------------------------------------------------------


@dataclass
class PasswdUser:
    name: str = _f("name", "")
    password_hash: str | None = _f("passwordHash")
    ssh_authorized_keys: list[str] = _f("sshAuthorizedKeys", factory=list)
    uid: int | None = _f("uid")
    gecos: str | None = _f("gecos")
    home_dir: str | None = _f("homeDir")
    no_create_home: bool | None = _f("noCreateHome")
    primary_group: str | None = _f("primaryGroup")
    groups: list[str] = _f("groups", factory=list)
    no_user_group: bool | None = _f("noUserGroup")
    no_log_init: bool | None = _f("noLogInit")
    shell: str | None = _f("shell")
    should_exist: bool | None = _f("shouldExist", since=(3, 2))
    system: bool | None = _f("system")


@dataclass
class PasswdGroup:
    name: str = _f("name", "")
    gid: int | None = _f("gid")
    password_hash: str | None = _f("passwordHash")
    should_exist: bool | None = _f("shouldExist", since=(3, 2))
    system: bool | None = _f("system")


@dataclass
class Passwd:
    users: list[PasswdUser] = _f("users", factory=list)
    groups: list[PasswdGroup] = _f("groups", factory=list)


# --- systemd ---------------------------------------------------------------------------------------


@dataclass
class Dropin:
    name: str = _f("name", "")
    contents: str | None = _f("contents")


@dataclass
class Unit:
    name: str = _f("name", "")
    enabled: bool | None = _f("enabled")
    mask: bool | None = _f("mask")
    contents: str | None = _f("contents")
    dropins: list[Dropin] = _f("dropins", factory=list)


@dataclass
class Systemd:
    units: list[Unit] = _f("units", factory=list)


# --- kernel arguments and the whole config ---------------------------------------------------------


@dataclass
class KernelArguments:
    should_exist: list[str] = _f("shouldExist", factory=list)
    should_not_exist: list[str] = _f("shouldNotExist", factory=list)


@dataclass
class Config:
    ignition: Ignition = _f("ignition", factory=Ignition)
    storage: Storage = _f("storage", factory=Storage)
    systemd: Systemd = _f("systemd", factory=Systemd)
    passwd: Passwd = _f("passwd", factory=Passwd)
    kernel_arguments: KernelArguments = _f("kernelArguments", since=(3, 3), factory=KernelArguments)
