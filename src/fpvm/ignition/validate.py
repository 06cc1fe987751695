"""Validation of a decoded config with the rules of the spec version it was written in.

Upstream validates a config in its own version's package before translating it, so the rules here
take that version into account (e.g. ``link target is required`` only from 3.3, special mode bits
warn only before 3.6). Messages are upstream's (``config/shared/errors``); paths are JSON paths
into the document as written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fpvm.ignition import gocompat, gourl
from fpvm.ignition.errors import Report
from fpvm.ignition.model import (
    Config,
    Directory,
    Disk,
    File,
    Filesystem,
    HTTPHeader,
    Link,
    Luks,
    Partition,
    Proxy,
    Raid,
    Resource,
    Systemd,
    Unit,
    Verification,
    Version,
)
from fpvm.ignition.unitfile import UnitSyntaxError, has_install_section, parse_unit

# Upstream's messages (config/shared/errors/errors.go).
DUPLICATE = "duplicate entry defined"
NO_PATH = "path not specified"
PATH_RELATIVE = "path not absolute"
DIRTY_PATH = "path is not fully simplified"
ILLEGAL_MODE = "illegal file mode"
SPECIAL_BITS = "setuid/setgid/sticky bits are not supported or functional in spec versions older than 3.6.0"
BOTH_ID_AND_NAME = "cannot set both id and name"
OVERWRITE_NIL_SOURCE = "overwrite must be false if source is unspecified"
VERIFICATION_NIL_SOURCE = "source must be specified if verification is specified"
COMPRESSION_INVALID = "invalid compression method"
INVALID_SCHEME = "invalid url scheme"
INVALID_URL = "unable to parse url"
INVALID_HEADER = "unable to parse HTTP header"
EMPTY_HEADER_NAME = "HTTP header name can't be empty"
HEADERS_SCHEME = "cannot use HTTP headers with this source scheme"
HASH_MALFORMED = "malformed hash specifier"
HASH_WRONG_SIZE = "incorrect size for hash sum"
HASH_UNRECOGNIZED = "unrecognized hash function"
SOURCE_REQUIRED = "source is required"
S3_ARN = "invalid S3 ARN format"
S3_VERSION_ID = "invalid S3 object VersionId"
FILE_USED_SYMLINK = "file path includes link in config"
DIR_USED_SYMLINK = "directory path includes link in config"
LINK_USED_SYMLINK = "link path includes link in config"
LINK_TARGET_REQUIRED = "link target is required"
HARD_LINK_TO_DIR = "hard link target is a directory"
HARD_LINK_OWNER = "user/group ignored for hard link"
DISK_DEVICE_REQUIRED = "disk device is required"
PARTITION_NUMBERS_COLLIDE = "partition numbers collide"
PARTITIONS_OVERLAP = "partitions overlap"
DUPLICATE_LABELS = "cannot use the same partition label twice"
SHOULD_NOT_EXIST_WITH_OTHERS = "shouldExist specified false with other options also specified"
NEED_LABEL_OR_NUMBER = "a partition number >= 1 or a label must be specified"
LABEL_TOO_LONG = "partition labels may not exceed 36 characters"
LABEL_COLON = "partition label will be truncated to text before the colon"
GUID_FORM = 'doesn\'t match the form "01234567-89AB-CDEF-EDCB-A98765432101"'
RAID_LEVEL_REQUIRED = "raid level is required"
SPARES_UNSUPPORTED = "spares unsupported for linear and raid0 arrays"
RAID_LEVEL_UNKNOWN = "unrecognized raid level"
RAID_DEVICES_REQUIRED = "raid devices required"
FS_INVALID_FORMAT = "invalid filesystem format"
LABEL_NEEDS_FORMAT = "filesystem must specify format if label is specified"
FORMAT_NIL_WITH_OTHERS = (
    "format cannot be empty when path, label, uuid, wipeFilesystem, options, or mountOptions is specified"
)
FS_LABEL_LIMITS = {
    "ext4": (16, "filesystem labels cannot be longer than 16 characters when using ext4"),
    "btrfs": (256, "filesystem labels cannot be longer than 256 characters when using btrfs"),
    "xfs": (12, "filesystem labels cannot be longer than 12 characters when using xfs"),
    "swap": (15, "filesystem labels cannot be longer than 15 characters when using swap"),
    "vfat": (11, "filesystem labels cannot be longer than 11 characters when using vfat"),
}
VIRTIOFS_LABEL = "filesystem labels cannot be set when using virtiofs"
VIRTIOFS_TAG_TOO_LONG = "virtiofs device tag cannot be longer than 36 bytes"
NO_DEVICE = "device not specified"
UUID_NOT_SUPPORTED = "filesystem uuid cannot be set for non-block-device filesystems"
WIPE_NOT_SUPPORTED = "wipeFilesystem cannot be set for non-block-device filesystems"
MKFS_OPTIONS_NOT_SUPPORTED = "filesystem options (mkfs) cannot be set for non-block-device filesystems"
PARTITIONS_OVERWRITTEN = "filesystem overwrites partitioned device"
IMPLICIT_WIPE = "device matches disk with wipeTable enabled; filesystem will be wiped"
LUKS_LABEL_TOO_LONG = "luks device labels cannot be longer than 47 characters"
LUKS_NAME_SLASH = "device names cannot contain slashes"
LUKS_KEY_FILE = "invalid key-file source"
CLEVIS_PIN_REQUIRED = "missing required custom clevis pin"
CLEVIS_PIN_UNKNOWN = "unsupported clevis pin"
CLEVIS_CONFIG_REQUIRED = "missing required custom clevis config"
CLEVIS_CUSTOM_WITH_OTHERS = "cannot use custom clevis config with tpm2, tang, or threshold"
TANG_THUMBPRINT_REQUIRED = "thumbprint is required"
TANG_ADVERTISEMENT = "advertisement is not valid JSON"
CEX_WITH_CLEVIS = "cannot use cex with clevis"
CEX_WITH_KEY_FILE = "cannot use key file with cex"
INVALID_PROXY = "proxies must be http(s)"
INSECURE_PROXY = "insecure plaintext HTTP proxy specified for HTTPS resources"
PATH_CONFLICTS_SYSTEMD = "path conflicts with systemd unit or dropin"
INVALID_UNIT_EXT = "invalid systemd unit extension"
INVALID_DROPIN_EXT = "invalid systemd drop-in extension"

UNIT_EXTENSIONS = frozenset(
    {
        ".service",
        ".socket",
        ".device",
        ".mount",
        ".automount",
        ".swap",
        ".target",
        ".path",
        ".timer",
        ".snapshot",
        ".slice",
        ".scope",
    }
)
LINEAR_LEVELS = frozenset({"linear", "raid0", "0", "stripe"})
RAID_LEVELS = LINEAR_LEVELS | {
    "raid1",
    "1",
    "mirror",
    "raid4",
    "4",
    "raid5",
    "5",
    "raid6",
    "6",
    "raid10",
    "10",
}
_GUID = re.compile(r"|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_INSTANCE_UNIT = re.compile(r"(.+?)@(.+?)\.service")


def _empty(s: str | None) -> bool:
    return s is None or s == ""


def path_error(p: str) -> str | None:
    if p == "":
        return NO_PATH
    if not p.startswith("/"):
        return PATH_RELATIVE
    if gocompat.clean(p) != p:
        return DIRTY_PATH
    return None


class Validator:
    def __init__(self, version: Version, report: Report, present: set[str]) -> None:
        self.v = version
        self.r = report
        self.present = present

    def err(self, path: str, message: str | None) -> None:
        if message:
            self.r.error(path, message)

    def warn(self, path: str, message: str | None) -> None:
        if message:
            self.r.warning(path, message)

    # --- URLs and resources ------------------------------------------------------------------------

    def url_error(self, s: str) -> str | None:
        """Upstream's ``validateURL`` for this version."""
        try:
            u = gourl.parse_url(s)
        except gourl.URLError:
            return INVALID_URL
        schemes = {"http", "https", "tftp"}
        if self.v >= (3, 2):
            schemes.add("gs")
        if u.scheme in schemes:
            return None
        if u.scheme == "s3" or (u.scheme == "arn" and self.v >= (3, 4)):
            if u.scheme == "arn":
                full = f"{u.scheme}:{u.opaque}"
                parts = gocompat.arn_parts(full)
                if parts is None or parts[2] != "s3":
                    return S3_ARN
                if len(full.split("/")) < (3 if parts[5].startswith("accesspoint/") else 2):
                    return S3_ARN
            values = gourl.query_values(u.raw_query, "versionId")
            if values is not None and (not values or values[0] == ""):
                return S3_VERSION_ID
            return None
        if u.scheme == "data":
            return gourl.data_url_error(s)
        return INVALID_SCHEME

    def url_nil_ok(self, s: str | None) -> str | None:
        return None if _empty(s) else self.url_error(s or "")

    def required_source(self, res: Resource) -> str | None:
        if _empty(res.source):
            return SOURCE_REQUIRED
        return self.url_error(res.source or "")

    def verification(self, v: Verification, path: str) -> None:
        if v.hash is None:
            return
        function, sep, digest = v.hash.partition("-")
        if not sep:
            self.err(path, HASH_MALFORMED)
            return
        sizes = {"sha512": 128}
        if self.v >= (3, 1):
            sizes["sha256"] = 64
        if function not in sizes:
            self.err(path, HASH_UNRECOGNIZED)
        elif gocompat.blen(digest) != sizes[function]:
            self.err(path, HASH_WRONG_SIZE)

    def resource(self, res: Resource, path: str, kind: str) -> None:
        """``kind``: "file" (contents/append), "config" (merge/replace), "ca", "key" (LUKS key file)."""
        vpath = f"{path}.verification.hash"
        self.verification(res.verification, vpath)
        if self.v < (3, 1):
            if kind == "ca":
                self.err(f"{path}.source", self.url_error(res.source or ""))
                return
            if kind == "file":
                if res.compression is not None and res.compression not in ("", "gzip"):
                    self.err(f"{path}.compression", COMPRESSION_INVALID)
                if res.verification.hash is not None and res.source is None:
                    self.err(vpath, VERIFICATION_NIL_SOURCE)
            self.err(f"{path}.source", self.url_nil_ok(res.source))
            return
        if res.compression is not None and res.compression not in ("", "gzip"):
            self.err(f"{path}.compression", COMPRESSION_INVALID)
        if res.verification.hash is not None and res.source is None:
            self.err(vpath, VERIFICATION_NIL_SOURCE)
        self.err(f"{path}.source", self.url_nil_ok(res.source))
        if res.http_headers:
            self.err(f"{path}.httpHeaders", self.headers_scheme_error(res.source))
        for i, header in enumerate(res.http_headers):
            self.header(header, f"{path}.httpHeaders[{i}]")
        self.dups(res.http_headers, lambda h: h.name, f"{path}.httpHeaders")

    def headers_scheme_error(self, source: str | None) -> str | None:
        if _empty(source):
            return INVALID_URL
        try:
            u = gourl.parse_url(source or "")
        except gourl.URLError:
            return INVALID_URL
        return None if u.scheme in ("http", "https") else HEADERS_SCHEME

    def header(self, h: HTTPHeader, path: str) -> None:
        if h.name == "":
            self.err(f"{path}.name", EMPTY_HEADER_NAME)
        if h.value is not None and h.value == "":
            self.err(f"{path}.value", INVALID_HEADER)

    def dups(self, items: Sequence[Any], key: Callable[[Any], str], path: str) -> None:
        seen: set[str] = set()
        for i, item in enumerate(items):
            k = key(item)
            if k in seen:
                self.err(f"{path}[{i}]", DUPLICATE)
            seen.add(k)

    def merged_dups(self, lists: Iterable[tuple[str, Sequence[Any], Callable[[Any], str]]]) -> None:
        seen: set[str] = set()
        for path, items, key in lists:
            for i, item in enumerate(items):
                k = key(item)
                if k in seen:
                    self.err(f"{path}[{i}]", DUPLICATE)
                seen.add(k)

    # --- sections ------------------------------------------------------------------------------------

    def config(self, cfg: Config) -> None:
        self.ignition(cfg)
        self.storage(cfg)
        self.systemd(cfg.systemd)
        self.passwd(cfg)
        self.merged_dups(
            [
                ("$.kernelArguments.shouldExist", cfg.kernel_arguments.should_exist, str),
                ("$.kernelArguments.shouldNotExist", cfg.kernel_arguments.should_not_exist, str),
            ]
        )
        self.systemd_conflicts(cfg)

    def ignition(self, cfg: Config) -> None:
        ign = cfg.ignition
        for i, res in enumerate(ign.config.merge):
            p = f"$.ignition.config.merge[{i}]"
            if self.v >= (3, 1):
                self.err(p, self.required_source(res))
            self.resource(res, p, "config")
        self.dups(ign.config.merge, lambda r: r.source or "", "$.ignition.config.merge")
        self.resource(ign.config.replace, "$.ignition.config.replace", "config")
        cas = ign.security.tls.certificate_authorities
        for i, res in enumerate(cas):
            p = f"$.ignition.security.tls.certificateAuthorities[{i}]"
            if self.v >= (3, 1):
                self.err(p, self.required_source(res))
            self.resource(res, p, "ca")
        self.dups(cas, lambda r: r.source or "", "$.ignition.security.tls.certificateAuthorities")
        if self.v >= (3, 1):
            self.proxy(ign.proxy)

    def proxy(self, proxy: Proxy) -> None:
        for name, value, http_ok in (
            ("httpProxy", proxy.http_proxy, True),
            ("httpsProxy", proxy.https_proxy, False),
        ):
            if value is None:
                continue
            path = f"$.ignition.proxy.{name}"
            try:
                scheme = gourl.parse_url(value).scheme
            except gourl.URLError:
                self.err(path, INVALID_URL)
                continue
            if scheme not in ("http", "https"):
                self.err(path, INVALID_PROXY)
            elif scheme == "http" and not http_ok:
                self.warn(path, INSECURE_PROXY)
        self.dups(proxy.no_proxy, str, "$.ignition.proxy.noProxy")

    def storage(self, cfg: Config) -> None:
        st = cfg.storage
        sections: list[tuple[str, Sequence[Any], Callable[[Any, str], None]]] = [
            ("disks", st.disks, self.disk),
            ("raid", st.raid, self.raid),
            ("filesystems", st.filesystems, self.filesystem),
            ("luks", st.luks, self.luks),
            ("files", st.files, self.file),
            ("directories", st.directories, self.directory),
            ("links", st.links, self.node),
        ]
        for name, items, check in sections:  # in upstream's order: it fixes the order of the report
            for i, item in enumerate(items):
                check(item, f"$.storage.{name}[{i}]")
        self.merged_dups(
            [
                ("$.storage.directories", st.directories, lambda n: n.path),
                ("$.storage.files", st.files, lambda n: n.path),
                ("$.storage.links", st.links, lambda n: n.path),
            ]
        )
        self.dups(st.disks, lambda d: d.device, "$.storage.disks")
        self.dups(st.filesystems, lambda f: f.device, "$.storage.filesystems")
        self.dups(st.luks, lambda x: x.name, "$.storage.luks")
        self.dups(st.raid, lambda x: x.name, "$.storage.raid")
        self.storage_links(st.files, st.directories, st.links)
        self.storage_filesystems(st.disks, st.filesystems)

    def node(self, n: File | Directory | Link, path: str) -> None:
        self.err(f"{path}.path", path_error(n.path))
        if n.user.id is not None and not _empty(n.user.name):
            self.err(f"{path}.user", BOTH_ID_AND_NAME)
        if n.group.id is not None and not _empty(n.group.name):
            self.err(f"{path}.group", BOTH_ID_AND_NAME)

    def mode(self, mode: int | None, path: str) -> None:
        if mode is None:
            return
        if mode < 0 or mode > 0o7777:
            self.err(path, ILLEGAL_MODE)
        if self.v < (3, 6) and (mode & 0xFFFFFFFF) & 0o7000:
            self.warn(path, SPECIAL_BITS)

    def file(self, f: File, path: str) -> None:
        self.node(f, path)
        self.mode(f.mode, f"{path}.mode")
        if f.overwrite is True and f.contents.source is None:
            self.err(f"{path}.overwrite", OVERWRITE_NIL_SOURCE)
        self.resource(f.contents, f"{path}.contents", "file")
        for i, res in enumerate(f.append):
            self.resource(res, f"{path}.append[{i}]", "file")

    def directory(self, d: Directory, path: str) -> None:
        self.node(d, path)
        self.mode(d.mode, f"{path}.mode")

    def storage_links(self, files: list[File], dirs: list[Directory], links: list[Link]) -> None:
        checks: list[tuple[str, Sequence[File | Directory], str]] = [
            ("directories", dirs, DIR_USED_SYMLINK),
            ("files", files, FILE_USED_SYMLINK),
        ]
        for kind, nodes, message in checks:
            for i, node in enumerate(nodes):
                for link in links:
                    if node.path.startswith(link.path + "/"):
                        self.err(f"$.storage.{kind}[{i}]", message)
        for i, l1 in enumerate(links):
            p = f"$.storage.links[{i}]"
            for l2 in links:
                if l1.path.startswith(l2.path + "/"):
                    self.err(p, LINK_USED_SYMLINK)
            if self.v >= (3, 3) and _empty(l1.target):
                self.err(f"{p}.target", LINK_TARGET_REQUIRED)
                continue
            if l1.hard is not True:
                continue
            raw_target = l1.target or ""
            target = gocompat.clean(raw_target)
            if not target.startswith("/"):
                target = gocompat.join(l1.path, raw_target)
            for d in dirs:
                if target == d.path:
                    self.err(p, HARD_LINK_TO_DIR)
            for who, owner in (("user", l1.user), ("group", l1.group)):
                if owner.id is not None:
                    self.warn(f"{p}.{who}.id", HARD_LINK_OWNER)
                if owner.name is not None:
                    self.warn(f"{p}.{who}.name", HARD_LINK_OWNER)

    def storage_filesystems(self, disks: list[Disk], filesystems: list[Filesystem]) -> None:
        by_device = {d.device: d for d in disks}
        for i, fs in enumerate(filesystems):
            disk = by_device.get(fs.device)
            if disk is None:
                continue
            if disk.partitions:
                self.warn(f"$.storage.filesystems[{i}].device", PARTITIONS_OVERWRITTEN)
            elif fs.wipe_filesystem is not True and disk.wipe_table is True:
                self.warn(f"$.storage.filesystems[{i}].device", IMPLICIT_WIPE)

    def disk(self, disk: Disk, path: str) -> None:
        for i, part in enumerate(disk.partitions):
            self.partition(part, f"{path}.partitions[{i}]")
        self.dups(disk.partitions, partition_key, f"{path}.partitions")
        if disk.device == "":
            self.err(f"{path}.device", DISK_DEVICE_REQUIRED)
            return
        self.err(f"{path}.device", path_error(disk.device))
        numbers: dict[int, list[int]] = {}
        for i, part in enumerate(disk.partitions):
            if part.number != 0:
                numbers.setdefault(part.number, []).append(i)
        for indexes in numbers.values():
            if len(indexes) > 1:
                self.err(f"{path}.partitions[{indexes[1]}]", PARTITION_NUMBERS_COLLIDE)
                break
        overlap = partitions_overlap(disk.partitions)
        if overlap is not None:
            self.err(f"{path}.partitions[{overlap}]", PARTITIONS_OVERLAP)
        labels: set[str] = set()
        for i, part in enumerate(disk.partitions):
            if part.label is not None:
                if part.label in labels:
                    self.err(f"{path}.partitions[{i}]", DUPLICATE_LABELS)
                    break
                labels.add(part.label)

    def partition(self, p: Partition, path: str) -> None:
        if p.should_exist is False and (
            p.label is not None
            or not _empty(p.type_guid)
            or not _empty(p.guid)
            or p.start_mib is not None
            or p.size_mib is not None
        ):
            self.err(path, SHOULD_NOT_EXIST_WITH_OTHERS)
        if p.number == 0 and p.label is None:
            self.err(path, NEED_LABEL_OR_NUMBER)
        if p.label is not None:
            if gocompat.blen(p.label) > 36:
                self.err(f"{path}.label", LABEL_TOO_LONG)
            elif ":" in p.label:
                self.err(f"{path}.label", LABEL_COLON)
        for name, guid in (("guid", p.guid), ("typeGuid", p.type_guid)):
            if guid is not None and not _GUID.fullmatch(guid):
                self.err(f"{path}.{name}", GUID_FORM)

    def raid(self, raid: Raid, path: str) -> None:
        self.err(f"{path}.level", self.raid_level_error(raid))
        if not raid.devices:
            self.err(f"{path}.devices", RAID_DEVICES_REQUIRED)
        for i, device in enumerate(raid.devices):
            self.err(f"{path}.devices[{i}]", path_error(device))
        self.dups(raid.devices, str, f"{path}.devices")

    def raid_level_error(self, raid: Raid) -> str | None:
        if self.v >= (3, 3) and _empty(raid.level):
            return RAID_LEVEL_REQUIRED
        level = raid.level or ""
        if level not in RAID_LEVELS:
            return RAID_LEVEL_UNKNOWN
        if level in LINEAR_LEVELS and raid.spares not in (None, 0):
            return SPARES_UNSUPPORTED
        return None

    def filesystem(self, fs: Filesystem, path: str) -> None:
        virtiofs = self.v >= (3, 7) and fs.format == "virtiofs"
        if fs.path is not None and fs.path != "":
            self.err(f"{path}.path", path_error(fs.path))
        if virtiofs:
            if fs.device == "":
                self.err(f"{path}.device", NO_DEVICE)
            elif gocompat.blen(fs.device) > 36:
                self.err(f"{path}.device", VIRTIOFS_TAG_TOO_LONG)
        else:
            self.err(f"{path}.device", path_error(fs.device))
        formats = {"ext4", "btrfs", "xfs", "swap", "vfat"}
        if self.v >= (3, 3):
            formats.add("none")
        if self.v >= (3, 7):
            formats.add("virtiofs")
        if _empty(fs.format):
            if (
                not _empty(fs.path)
                or not _empty(fs.label)
                or not _empty(fs.uuid)
                or fs.wipe_filesystem is True
                or fs.mount_options
                or fs.options
            ):
                self.err(f"{path}.format", FORMAT_NIL_WITH_OTHERS)
        elif fs.format not in formats:
            self.err(f"{path}.format", FS_INVALID_FORMAT)
        if not _empty(fs.label):
            label = fs.label or ""
            if _empty(fs.format):
                self.err(f"{path}.label", LABEL_NEEDS_FORMAT)
            elif fs.format in FS_LABEL_LIMITS:
                limit, message = FS_LABEL_LIMITS[fs.format or ""]
                if gocompat.blen(label) > limit:
                    self.err(f"{path}.label", message)
            elif virtiofs:
                self.err(f"{path}.label", VIRTIOFS_LABEL)
        if virtiofs:
            if not _empty(fs.uuid):
                self.err(f"{path}.uuid", UUID_NOT_SUPPORTED)
            if fs.wipe_filesystem is True:
                self.err(f"{path}.wipeFilesystem", WIPE_NOT_SUPPORTED)
            if fs.options:
                self.err(f"{path}.options", MKFS_OPTIONS_NOT_SUPPORTED)

    def luks(self, luks: Luks, path: str) -> None:
        if "/" in luks.name:
            self.err(f"{path}.name", LUKS_NAME_SLASH)
        if not _empty(luks.label) and gocompat.blen(luks.label or "") > 47:
            self.err(f"{path}.label", LUKS_LABEL_TOO_LONG)
        if _empty(luks.device):
            self.err(f"{path}.device", DISK_DEVICE_REQUIRED)
        else:
            self.err(f"{path}.device", path_error(luks.device or ""))
        clevis = luks.clevis
        others = bool(clevis.tang) or clevis.tpm2 is True or clevis.threshold not in (None, 0)
        custom_path = f"{path}.clevis.custom"
        if self.v < (3, 3):
            custom_given = custom_path in self.present and f"{path}.clevis" in self.present
            if custom_given and others:
                self.err(f"{path}.clevis", CLEVIS_CUSTOM_WITH_OTHERS)
        elif not _empty(clevis.custom.pin) and others:
            self.err(f"{path}.clevis", CLEVIS_CUSTOM_WITH_OTHERS)
        if self.url_nil_ok(luks.key_file.source) is not None:
            self.err(f"{path}.keys", LUKS_KEY_FILE)
        if self.v >= (3, 5) and luks.cex.enabled is True:
            clevis_present = not _empty(clevis.custom.pin) or others
            if clevis_present:
                self.err(f"{path}.cex", CEX_WITH_CLEVIS)
            if not _empty(luks.key_file.source):
                self.err(f"{path}.cex", CEX_WITH_KEY_FILE)
        self.resource(luks.key_file, f"{path}.keyFile", "key")
        self.clevis_custom(luks, custom_path)
        for i, tang in enumerate(clevis.tang):
            tp = f"{path}.clevis.tang[{i}]"
            try:
                scheme = gourl.parse_url(tang.url).scheme
                if scheme not in ("http", "https"):
                    self.err(f"{tp}.url", INVALID_SCHEME)
            except gourl.URLError:
                self.err(f"{tp}.url", INVALID_URL)
            if _empty(tang.thumbprint):
                self.err(f"{tp}.thumbprint", TANG_THUMBPRINT_REQUIRED)
            if self.v >= (3, 4) and not _empty(tang.advertisement) and not _is_json(tang.advertisement or ""):
                self.err(f"{tp}.advertisement", TANG_ADVERTISEMENT)
        self.dups(clevis.tang, lambda t: t.url, f"{path}.clevis.tang")
        self.dups(luks.open_options, str, f"{path}.openOptions")

    def clevis_custom(self, luks: Luks, path: str) -> None:
        custom = luks.clevis.custom
        if self.v < (3, 3):
            if path not in self.present:
                return
            pin, config = custom.pin or "", custom.config or ""
            if pin == "" and config == "":
                return
            if pin not in ("tpm2", "tang", "sss"):
                self.err(f"{path}.pin", CLEVIS_PIN_UNKNOWN)
            if config == "":
                self.err(f"{path}.config", CLEVIS_CONFIG_REQUIRED)
            return
        if _empty(custom.pin) and _empty(custom.config) and custom.needs_network is not True:
            return
        if _empty(custom.pin):
            self.err(f"{path}.pin", CLEVIS_PIN_REQUIRED)
        elif self.v < (3, 6) and custom.pin not in ("tpm2", "tang", "sss"):
            self.err(f"{path}.pin", CLEVIS_PIN_UNKNOWN)
        if _empty(custom.config):
            self.err(f"{path}.config", CLEVIS_CONFIG_REQUIRED)

    def passwd(self, cfg: Config) -> None:
        pw = cfg.passwd
        self.dups(pw.users, lambda u: u.name, "$.passwd.users")
        self.dups(pw.groups, lambda g: g.name, "$.passwd.groups")
        for i, user in enumerate(pw.users):
            self.dups(user.groups, str, f"$.passwd.users[{i}].groups")
            self.dups(user.ssh_authorized_keys, str, f"$.passwd.users[{i}].sshAuthorizedKeys")

    def systemd(self, sd: Systemd) -> None:
        for i, unit in enumerate(sd.units):
            self.unit(unit, f"$.systemd.units[{i}]")
        self.dups(sd.units, lambda u: u.name, "$.systemd.units")
        by_name = {u.name: u for u in sd.units}
        for i, unit in enumerate(sd.units):
            m = _INSTANCE_UNIT.fullmatch(unit.name)
            if not m or unit.enabled is not True:
                continue
            template = f"{m.group(1)}@.service"
            tmpl = by_name.get(template)
            if tmpl is None or _empty(tmpl.contents):
                continue
            try:
                options = parse_unit(tmpl.contents)
            except UnitSyntaxError:
                continue
            if not has_install_section(options):
                self.warn(
                    f"$.systemd.units[{i}].contents",
                    f"template unit {json.dumps(template)} for {json.dumps(unit.name)} "
                    "doesn't have Install section",
                )

    def unit(self, unit: Unit, path: str) -> None:
        if gocompat.ext(unit.name) not in UNIT_EXTENSIONS:
            self.err(f"{path}.name", INVALID_UNIT_EXT)
        try:
            options = parse_unit(unit.contents)
        except UnitSyntaxError as exc:
            self.err(f"{path}.contents", f"invalid unit content: {exc}")
        else:
            if unit.enabled is True and not _empty(unit.contents) and not has_install_section(options):
                self.warn(
                    f"{path}.contents",
                    f"unit {json.dumps(unit.name)} is enabled, but has no install section "
                    "so enable does nothing",
                )
        for i, dropin in enumerate(unit.dropins):
            dp = f"{path}.dropins[{i}]"
            try:
                parse_unit(dropin.contents)
            except UnitSyntaxError as exc:
                self.err(f"{dp}.contents", f"invalid unit content: {exc}")
            if gocompat.ext(dropin.name) != ".conf":
                self.err(f"{dp}.name", INVALID_DROPIN_EXT)
        self.dups(unit.dropins, lambda d: d.name, f"{path}.dropins")

    def systemd_conflicts(self, cfg: Config) -> None:
        unit_paths: set[str] = set()
        for unit in cfg.systemd.units:
            if not _empty(unit.contents):
                unit_paths.add(f"/etc/systemd/system/{unit.name}")
            for dropin in unit.dropins:
                if not _empty(dropin.contents):
                    unit_paths.add(f"/etc/systemd/system/{unit.name}.d/{dropin.name}")
        st = cfg.storage
        groups: list[tuple[str, Sequence[File | Directory | Link]]] = [
            ("files", st.files),
            ("directories", st.directories),
            ("links", st.links),
        ]
        for kind, nodes in groups:
            for i, node in enumerate(nodes):
                if node.path in unit_paths:
                    self.err(f"$.storage.{kind}[{i}].path", PATH_CONFLICTS_SYSTEMD)


def partition_key(p: Partition) -> str:
    if p.number != 0:
        return f"number:{p.number}"
    if p.label is not None:
        return f"label:{p.label}"
    return ""


def partitions_overlap(parts: list[Partition]) -> int | None:
    """Index reported by upstream's overlap check (starts of 0 are placed by sgdisk: not checked)."""

    def end(p: Partition) -> int:
        assert p.start_mib is not None and p.size_mib is not None
        if p.size_mib == 0:
            return p.start_mib
        # Go's int arithmetic wraps around at 64 bits; so must ours, to overlap the same way.
        return (p.start_mib + p.size_mib - 1 + 2**63) % 2**64 - 2**63

    for p in parts:
        if p.start_mib is None or p.size_mib is None or p.start_mib == 0:
            continue
        for i, o in enumerate(parts):
            if o.start_mib is None or o.size_mib is None or o is p or o.start_mib == 0:
                continue
            if o.start_mib <= p.start_mib <= end(o):
                return i
            if o.start_mib <= end(p) <= end(o):
                return i
            if p.start_mib < o.start_mib and end(p) > end(o):
                return i
    return None


def _is_json(text: str) -> bool:
    from fpvm.ignition.jsonread import JSONSyntaxError, loads

    try:
        loads(text.encode("utf-8", "surrogatepass"))
    except JSONSyntaxError:
        return False
    return True


def validate(cfg: Config, version: Version, report: Report, present: set[str]) -> None:
    """Add every finding about ``cfg`` (written in spec ``version``) to ``report``."""
    Validator(version, report, present).config(cfg)
