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

from typing import Any

from fpvm.ignition.records import dataclass, field

Version = tuple[int, int]

NEWEST: Version = (3, 6)


def _m(key: str, since: Version = (3, 0)) -> dict[str, Any]:
    """Field metadata: the JSON key and the spec version that introduced it."""
    return {"json": key, "since": since}


# --- shared pieces ---------------------------------------------------------------------------------


@dataclass
class Verification:
    hash: str | None = field(default=None, metadata=_m("hash"))


@dataclass
class HTTPHeader:
    name: str = field(default="", metadata=_m("name"))
    value: str | None = field(default=None, metadata=_m("value"))


@dataclass
class Resource:
    """A fetchable blob: file contents/append, merged/replacing config, CA, LUKS key file."""

    source: str | None = field(default=None, metadata=_m("source"))
    compression: str | None = field(default=None, metadata=_m("compression", (3, 1)))
    http_headers: list[HTTPHeader] = field(default_factory=list, metadata=_m("httpHeaders", (3, 1)))
    verification: Verification = field(default_factory=Verification, metadata=_m("verification"))


# --- ignition section ------------------------------------------------------------------------------


@dataclass
class IgnitionConfig:
    merge: list[Resource] = field(default_factory=list, metadata=_m("merge"))
    replace: Resource = field(default_factory=Resource, metadata=_m("replace"))


@dataclass
class Timeouts:
    http_response_headers: int | None = field(default=None, metadata=_m("httpResponseHeaders"))
    http_total: int | None = field(default=None, metadata=_m("httpTotal"))


@dataclass
class TLS:
    certificate_authorities: list[Resource] = field(
        default_factory=list, metadata=_m("certificateAuthorities")
    )


@dataclass
class Security:
    tls: TLS = field(default_factory=TLS, metadata=_m("tls"))


@dataclass
class Proxy:
    http_proxy: str | None = field(default=None, metadata=_m("httpProxy"))
    https_proxy: str | None = field(default=None, metadata=_m("httpsProxy"))
    no_proxy: list[str] = field(default_factory=list, metadata=_m("noProxy"))


@dataclass
class Ignition:
    version: str = field(default="", metadata=_m("version"))
    config: IgnitionConfig = field(default_factory=IgnitionConfig, metadata=_m("config"))
    timeouts: Timeouts = field(default_factory=Timeouts, metadata=_m("timeouts"))
    security: Security = field(default_factory=Security, metadata=_m("security"))
    proxy: Proxy = field(default_factory=Proxy, metadata=_m("proxy", (3, 1)))


# --- storage ---------------------------------------------------------------------------------------


@dataclass
class Partition:
    label: str | None = field(default=None, metadata=_m("label"))
    number: int = field(default=0, metadata=_m("number"))
    size_mib: int | None = field(default=None, metadata=_m("sizeMiB"))
    start_mib: int | None = field(default=None, metadata=_m("startMiB"))
    type_guid: str | None = field(default=None, metadata=_m("typeGuid"))
    guid: str | None = field(default=None, metadata=_m("guid"))
    wipe_partition_entry: bool | None = field(default=None, metadata=_m("wipePartitionEntry"))
    should_exist: bool | None = field(default=None, metadata=_m("shouldExist"))
    resize: bool | None = field(default=None, metadata=_m("resize", (3, 2)))


@dataclass
class Disk:
    device: str = field(default="", metadata=_m("device"))
    wipe_table: bool | None = field(default=None, metadata=_m("wipeTable"))
    partitions: list[Partition] = field(default_factory=list, metadata=_m("partitions"))


@dataclass
class Raid:
    name: str = field(default="", metadata=_m("name"))
    level: str | None = field(default=None, metadata=_m("level"))
    devices: list[str] = field(default_factory=list, metadata=_m("devices"))
    spares: int | None = field(default=None, metadata=_m("spares"))
    options: list[str] = field(default_factory=list, metadata=_m("options"))


@dataclass
class Filesystem:
    device: str = field(default="", metadata=_m("device"))
    format: str | None = field(default=None, metadata=_m("format"))
    path: str | None = field(default=None, metadata=_m("path"))
    wipe_filesystem: bool | None = field(default=None, metadata=_m("wipeFilesystem"))
    label: str | None = field(default=None, metadata=_m("label"))
    uuid: str | None = field(default=None, metadata=_m("uuid"))
    options: list[str] = field(default_factory=list, metadata=_m("options"))
    mount_options: list[str] = field(default_factory=list, metadata=_m("mountOptions", (3, 1)))


@dataclass
class Tang:
    url: str = field(default="", metadata=_m("url"))
    thumbprint: str | None = field(default=None, metadata=_m("thumbprint"))
    advertisement: str | None = field(default=None, metadata=_m("advertisement", (3, 4)))


@dataclass
class ClevisCustom:
    pin: str | None = field(default=None, metadata=_m("pin"))
    config: str | None = field(default=None, metadata=_m("config"))
    needs_network: bool | None = field(default=None, metadata=_m("needsNetwork"))


@dataclass
class Clevis:
    tang: list[Tang] = field(default_factory=list, metadata=_m("tang"))
    tpm2: bool | None = field(default=None, metadata=_m("tpm2"))
    threshold: int | None = field(default=None, metadata=_m("threshold"))
    custom: ClevisCustom = field(default_factory=ClevisCustom, metadata=_m("custom"))


@dataclass
class Cex:
    enabled: bool | None = field(default=None, metadata=_m("enabled"))


@dataclass
class Luks:
    name: str = field(default="", metadata=_m("name"))
    device: str | None = field(default=None, metadata=_m("device"))
    key_file: Resource = field(default_factory=Resource, metadata=_m("keyFile"))
    label: str | None = field(default=None, metadata=_m("label"))
    uuid: str | None = field(default=None, metadata=_m("uuid"))
    options: list[str] = field(default_factory=list, metadata=_m("options"))
    discard: bool | None = field(default=None, metadata=_m("discard", (3, 4)))
    open_options: list[str] = field(default_factory=list, metadata=_m("openOptions", (3, 4)))
    wipe_volume: bool | None = field(default=None, metadata=_m("wipeVolume"))
    clevis: Clevis = field(default_factory=Clevis, metadata=_m("clevis"))
    cex: Cex = field(default_factory=Cex, metadata=_m("cex", (3, 5)))


@dataclass
class NodeUser:
    id: int | None = field(default=None, metadata=_m("id"))
    name: str | None = field(default=None, metadata=_m("name"))


@dataclass
class NodeGroup:
    id: int | None = field(default=None, metadata=_m("id"))
    name: str | None = field(default=None, metadata=_m("name"))


@dataclass
class File:
    path: str = field(default="", metadata=_m("path"))
    overwrite: bool | None = field(default=None, metadata=_m("overwrite"))
    user: NodeUser = field(default_factory=NodeUser, metadata=_m("user"))
    group: NodeGroup = field(default_factory=NodeGroup, metadata=_m("group"))
    mode: int | None = field(default=None, metadata=_m("mode"))
    contents: Resource = field(default_factory=Resource, metadata=_m("contents"))
    append: list[Resource] = field(default_factory=list, metadata=_m("append"))


@dataclass
class Directory:
    path: str = field(default="", metadata=_m("path"))
    overwrite: bool | None = field(default=None, metadata=_m("overwrite"))
    user: NodeUser = field(default_factory=NodeUser, metadata=_m("user"))
    group: NodeGroup = field(default_factory=NodeGroup, metadata=_m("group"))
    mode: int | None = field(default=None, metadata=_m("mode"))


@dataclass
class Link:
    path: str = field(default="", metadata=_m("path"))
    overwrite: bool | None = field(default=None, metadata=_m("overwrite"))
    user: NodeUser = field(default_factory=NodeUser, metadata=_m("user"))
    group: NodeGroup = field(default_factory=NodeGroup, metadata=_m("group"))
    target: str | None = field(default=None, metadata=_m("target"))
    hard: bool | None = field(default=None, metadata=_m("hard"))


@dataclass
class Storage:
    disks: list[Disk] = field(default_factory=list, metadata=_m("disks"))
    raid: list[Raid] = field(default_factory=list, metadata=_m("raid"))
    filesystems: list[Filesystem] = field(default_factory=list, metadata=_m("filesystems"))
    luks: list[Luks] = field(default_factory=list, metadata=_m("luks", (3, 2)))
    files: list[File] = field(default_factory=list, metadata=_m("files"))
    directories: list[Directory] = field(default_factory=list, metadata=_m("directories"))
    links: list[Link] = field(default_factory=list, metadata=_m("links"))


# --- passwd ----------------------------------------------------------------------------------------


@dataclass
class PasswdUser:
    name: str = field(default="", metadata=_m("name"))
    password_hash: str | None = field(default=None, metadata=_m("passwordHash"))
    ssh_authorized_keys: list[str] = field(default_factory=list, metadata=_m("sshAuthorizedKeys"))
    uid: int | None = field(default=None, metadata=_m("uid"))
    gecos: str | None = field(default=None, metadata=_m("gecos"))
    home_dir: str | None = field(default=None, metadata=_m("homeDir"))
    no_create_home: bool | None = field(default=None, metadata=_m("noCreateHome"))
    primary_group: str | None = field(default=None, metadata=_m("primaryGroup"))
    groups: list[str] = field(default_factory=list, metadata=_m("groups"))
    no_user_group: bool | None = field(default=None, metadata=_m("noUserGroup"))
    no_log_init: bool | None = field(default=None, metadata=_m("noLogInit"))
    shell: str | None = field(default=None, metadata=_m("shell"))
    should_exist: bool | None = field(default=None, metadata=_m("shouldExist", (3, 2)))
    system: bool | None = field(default=None, metadata=_m("system"))


@dataclass
class PasswdGroup:
    name: str = field(default="", metadata=_m("name"))
    gid: int | None = field(default=None, metadata=_m("gid"))
    password_hash: str | None = field(default=None, metadata=_m("passwordHash"))
    should_exist: bool | None = field(default=None, metadata=_m("shouldExist", (3, 2)))
    system: bool | None = field(default=None, metadata=_m("system"))


@dataclass
class Passwd:
    users: list[PasswdUser] = field(default_factory=list, metadata=_m("users"))
    groups: list[PasswdGroup] = field(default_factory=list, metadata=_m("groups"))


# --- systemd ---------------------------------------------------------------------------------------


@dataclass
class Dropin:
    name: str = field(default="", metadata=_m("name"))
    contents: str | None = field(default=None, metadata=_m("contents"))


@dataclass
class Unit:
    name: str = field(default="", metadata=_m("name"))
    enabled: bool | None = field(default=None, metadata=_m("enabled"))
    mask: bool | None = field(default=None, metadata=_m("mask"))
    contents: str | None = field(default=None, metadata=_m("contents"))
    dropins: list[Dropin] = field(default_factory=list, metadata=_m("dropins"))


@dataclass
class Systemd:
    units: list[Unit] = field(default_factory=list, metadata=_m("units"))


# --- kernel arguments and the whole config ---------------------------------------------------------


@dataclass
class KernelArguments:
    should_exist: list[str] = field(default_factory=list, metadata=_m("shouldExist"))
    should_not_exist: list[str] = field(default_factory=list, metadata=_m("shouldNotExist"))


@dataclass
class Config:
    ignition: Ignition = field(default_factory=Ignition, metadata=_m("ignition"))
    storage: Storage = field(default_factory=Storage, metadata=_m("storage"))
    systemd: Systemd = field(default_factory=Systemd, metadata=_m("systemd"))
    passwd: Passwd = field(default_factory=Passwd, metadata=_m("passwd"))
    kernel_arguments: KernelArguments = field(
        default_factory=KernelArguments, metadata=_m("kernelArguments", (3, 3))
    )
