"""Config merging with upstream's rules (config/merge/merge.go), cases re-expressed from its behaviour."""

from __future__ import annotations

import copy

from fpvm.ignition import model as m
from fpvm.ignition.merge import merge


def cfg(**sections: object) -> m.Config:
    config = m.Config(ignition=m.Ignition(version="3.6.0"))
    for name, value in sections.items():
        setattr(config, name, value)
    return config


def test_child_version_wins() -> None:
    parent = m.Config(ignition=m.Ignition(version="3.2.0"))
    child = m.Config(ignition=m.Ignition(version="3.6.0"))
    assert merge(parent, child).ignition.version == "3.6.0"


def test_disks_by_device_partitions_by_number() -> None:
    parent = cfg(
        storage=m.Storage(
            disks=[
                m.Disk(
                    device="/dev/vda",
                    wipe_table=True,
                    partitions=[m.Partition(number=1, label="root", start_mib=4)],
                ),
                m.Disk(device="/dev/vdb", wipe_table=True),
            ]
        )
    )
    child = cfg(
        storage=m.Storage(
            disks=[
                m.Disk(
                    device="/dev/vda",
                    wipe_table=False,
                    partitions=[m.Partition(number=1, label="renamed"), m.Partition(number=2, label="data")],
                ),
                m.Disk(device="/dev/vdb"),
                m.Disk(device="/dev/vdc", wipe_table=True),
            ]
        )
    )
    out = merge(parent, child).storage.disks
    assert [d.device for d in out] == ["/dev/vda", "/dev/vdb", "/dev/vdc"]
    assert out[0].wipe_table is False
    assert out[0].partitions == [
        m.Partition(number=1, label="renamed", start_mib=4),
        m.Partition(number=2, label="data"),
    ]
    assert out[1].wipe_table is True  # the child did not say, the parent's value stays


def test_partitions_without_number_are_keyed_by_label() -> None:
    parent = cfg(
        storage=m.Storage(disks=[m.Disk("/dev/vda", partitions=[m.Partition(label="x", size_mib=10)])])
    )
    child = cfg(storage=m.Storage(disks=[m.Disk("/dev/vda", partitions=[m.Partition(label="x", guid="g")])]))
    (part,) = merge(parent, child).storage.disks[0].partitions
    assert (part.label, part.size_mib, part.guid) == ("x", 10, "g")


def test_file_append_lists_are_concatenated() -> None:
    parent = cfg(storage=m.Storage(files=[m.File("/foo", append=[m.Resource(source="data:,1")])]))
    child = cfg(
        storage=m.Storage(
            files=[m.File("/foo", append=[m.Resource(source="data:,1"), m.Resource(source="data:,2")])]
        )
    )
    (out,) = merge(parent, child).storage.files
    assert [r.source for r in out.append] == ["data:,1", "data:,1", "data:,2"]


def test_files_directories_links_share_one_key_space() -> None:
    parent = cfg(
        storage=m.Storage(
            files=[m.File("/a", mode=0o600), m.File("/b")],
            links=[m.Link("/c", target="/x")],
        )
    )
    child = cfg(
        storage=m.Storage(
            directories=[m.Directory("/b", mode=0o755)],
            files=[m.File("/c", contents=m.Resource(source="data:,c"))],
            links=[m.Link("/d", target="/y")],
        )
    )
    out = merge(parent, child).storage
    assert [f.path for f in out.files] == ["/a", "/c"]  # /b became a directory
    assert [d.path for d in out.directories] == ["/b"]
    assert [lk.path for lk in out.links] == ["/d"]  # the link at /c became a file
    assert out.files[1].contents.source == "data:,c"


def test_file_fields_merge_with_child_precedence() -> None:
    parent = cfg(
        storage=m.Storage(
            files=[
                m.File("/a", contents=m.Resource(source="data:,")),
                m.File("/b", mode=0o644),
                m.File("/c", contents=m.Resource(source="data:,")),
            ]
        )
    )
    child = cfg(
        storage=m.Storage(
            files=[
                m.File("/a", mode=0o644),
                m.File("/b", contents=m.Resource(source="data:,")),
                m.File("/c", contents=m.Resource(compression="gzip")),
            ]
        )
    )
    a, b, c = merge(parent, child).storage.files
    assert (a.contents.source, a.mode) == ("data:,", 0o644)
    assert (b.contents.source, b.mode) == ("data:,", 0o644)
    assert (c.contents.source, c.contents.compression) == ("data:,", "gzip")


def test_string_lists_are_deduplicated() -> None:
    parent = cfg(passwd=m.Passwd(users=[m.PasswdUser("core", ssh_authorized_keys=["one", "two"])]))
    child = cfg(passwd=m.Passwd(users=[m.PasswdUser("core", ssh_authorized_keys=["three", "two"])]))
    (user,) = merge(parent, child).passwd.users
    assert user.ssh_authorized_keys == ["one", "two", "three"]


def test_users_and_groups_by_name() -> None:
    parent = cfg(
        passwd=m.Passwd(
            users=[m.PasswdUser("core", uid=1000, shell="/bin/sh", groups=["wheel"])],
            groups=[m.PasswdGroup("podman", gid=500)],
        )
    )
    child = cfg(
        passwd=m.Passwd(
            users=[m.PasswdUser("core", shell="/usr/local/bin/bash", groups=["wheel", "operator"])],
            groups=[m.PasswdGroup("podman", system=True), m.PasswdGroup("extra")],
        )
    )
    out = merge(parent, child).passwd
    (user,) = out.users
    assert (user.uid, user.shell, user.groups) == (1000, "/usr/local/bin/bash", ["wheel", "operator"])
    assert [(g.name, g.gid, g.system) for g in out.groups] == [("podman", 500, True), ("extra", None, None)]


def test_units_and_dropins_by_name() -> None:
    parent = cfg(
        systemd=m.Systemd(
            units=[
                m.Unit("a.service", enabled=True, contents="[Unit]\n", dropins=[m.Dropin("10.conf", "x")]),
                m.Unit("b.service", mask=True),
            ]
        )
    )
    child = cfg(
        systemd=m.Systemd(
            units=[
                m.Unit(
                    "a.service",
                    contents="[Service]\n",
                    dropins=[m.Dropin("10.conf", "y"), m.Dropin("20.conf")],
                ),
                m.Unit("c.mount", enabled=False),
            ]
        )
    )
    a, b, c = merge(parent, child).systemd.units
    assert (a.name, a.enabled, a.contents) == ("a.service", True, "[Service]\n")
    assert a.dropins == [m.Dropin("10.conf", "y"), m.Dropin("20.conf")]
    assert (b.name, b.mask) == ("b.service", True)
    assert (c.name, c.enabled) == ("c.mount", False)


def test_filesystem_options_append_but_filesystems_are_keyed() -> None:
    parent = cfg(
        storage=m.Storage(
            filesystems=[
                m.Filesystem("/dev/sda", options=["a", "b"]),
                m.Filesystem("/dev/sdb", options=["a", "b"]),
            ]
        )
    )
    child = cfg(
        storage=m.Storage(
            filesystems=[
                m.Filesystem("/dev/sda", mount_options=["c", "d"]),
                m.Filesystem("/dev/sdb", options=["a", "d"]),
            ]
        )
    )
    sda, sdb = merge(parent, child).storage.filesystems
    assert (sda.options, sda.mount_options) == (["a", "b"], ["c", "d"])
    assert sdb.options == ["a", "b", "a", "d"]


def test_raid_and_luks_by_name() -> None:
    parent = cfg(
        storage=m.Storage(
            raid=[m.Raid("md0", level="raid1", devices=["/dev/a"], options=["--x"])],
            luks=[m.Luks("root", device="/dev/a", open_options=["--allow-discards"], options=["-v"])],
        )
    )
    child = cfg(
        storage=m.Storage(
            raid=[m.Raid("md0", devices=["/dev/a", "/dev/b"], options=["--x"])],
            luks=[m.Luks("root", open_options=["--allow-discards"], options=["-v"])],
        )
    )
    out = merge(parent, child).storage
    assert (out.raid[0].level, out.raid[0].devices, out.raid[0].options) == (
        "raid1",
        ["/dev/a", "/dev/b"],
        ["--x", "--x"],
    )
    assert (out.luks[0].device, out.luks[0].open_options, out.luks[0].options) == (
        "/dev/a",
        ["--allow-discards"],
        ["-v", "-v"],
    )


def headers(*pairs: tuple[str, str | None]) -> list[m.HTTPHeader]:
    return [m.HTTPHeader(name, value) for name, value in pairs]


PARENT_HEADERS = headers(("old-header", "old"), ("same-header", "old"), ("to-remove", "v"))
CHILD_HEADERS = headers(("to-remove", None), ("new-header", "new"), ("same-header", "new"))
MERGED_HEADERS = headers(("old-header", "old"), ("same-header", "new"), ("new-header", "new"))


def test_http_headers_of_merge_references() -> None:
    url = "http://example.com/config.ign"
    parent = cfg(
        ignition=m.Ignition(
            "3.6.0", config=m.IgnitionConfig(merge=[m.Resource(source=url, http_headers=PARENT_HEADERS)])
        )
    )
    child = cfg(
        ignition=m.Ignition(
            "3.6.0", config=m.IgnitionConfig(merge=[m.Resource(source=url, http_headers=CHILD_HEADERS)])
        )
    )
    (ref,) = merge(parent, child).ignition.config.merge
    assert ref.http_headers == MERGED_HEADERS


def test_http_headers_of_replace_ca_and_file_contents() -> None:
    def with_headers(hs: list[m.HTTPHeader]) -> m.Config:
        return cfg(
            ignition=m.Ignition(
                "3.6.0",
                config=m.IgnitionConfig(
                    replace=m.Resource(source="http://r", http_headers=copy.deepcopy(hs))
                ),
                security=m.Security(m.TLS([m.Resource(source="http://ca", http_headers=copy.deepcopy(hs))])),
            ),
            storage=m.Storage(files=[m.File("/f", contents=m.Resource(source="http://f", http_headers=hs))]),
        )

    out = merge(with_headers(PARENT_HEADERS), with_headers(CHILD_HEADERS))
    assert out.ignition.config.replace.http_headers == MERGED_HEADERS
    assert out.ignition.security.tls.certificate_authorities[0].http_headers == MERGED_HEADERS
    assert out.storage.files[0].contents.http_headers == MERGED_HEADERS


def test_appended_resources_keep_their_own_headers() -> None:
    parent = cfg(
        storage=m.Storage(files=[m.File("/f", append=[m.Resource("http://a", http_headers=PARENT_HEADERS)])])
    )
    child = cfg(
        storage=m.Storage(files=[m.File("/f", append=[m.Resource("http://a", http_headers=CHILD_HEADERS)])])
    )
    (out,) = merge(parent, child).storage.files
    assert [r.http_headers for r in out.append] == [PARENT_HEADERS, CHILD_HEADERS]


def test_kernel_arguments_share_one_key_space() -> None:
    parent = cfg(kernel_arguments=m.KernelArguments(["foo", "bar baz", "test"], ["brown fox"]))
    child = cfg(kernel_arguments=m.KernelArguments([], ["test"]))
    out = merge(parent, child).kernel_arguments
    assert out.should_exist == ["foo", "bar baz"]
    assert out.should_not_exist == ["brown fox", "test"]


def test_one_sided_subtrees_are_taken_whole() -> None:
    full = cfg(
        storage=m.Storage(
            files=[m.File("/a", contents=m.Resource("data:", http_headers=headers(("h", "v"))))],
            filesystems=[m.Filesystem("/dev/sda", options=["z"])],
        )
    )
    empty = cfg()
    assert merge(full, empty) == full
    assert merge(empty, full) == full


def test_node_owner_fields_merge_individually() -> None:
    """Merging two valid configs can give an invalid one (id and name); upstream accepts that too."""
    parent = cfg(storage=m.Storage(directories=[m.Directory("/d", user=m.NodeUser(id=0))]))
    child = cfg(storage=m.Storage(directories=[m.Directory("/d", user=m.NodeUser(name="core"))]))
    (d,) = merge(parent, child).storage.directories
    assert (d.user.id, d.user.name) == (0, "core")


def test_inputs_are_not_modified() -> None:
    parent = cfg(passwd=m.Passwd(users=[m.PasswdUser("core", ssh_authorized_keys=["a"])]))
    child = cfg(passwd=m.Passwd(users=[m.PasswdUser("core", ssh_authorized_keys=["b"])]))
    before = (copy.deepcopy(parent), copy.deepcopy(child))
    out = merge(parent, child)
    out.passwd.users[0].ssh_authorized_keys.append("c")
    assert (parent, child) == before
