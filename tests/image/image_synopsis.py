"""Checkers for makefs, mkimg, gpart, zpool and zfs command lines against FreeBSD's manual pages.

The excerpts below are the SYNOPSIS sections (and the lists of values the pages name) as kept in
freebsd-src (main, 2026), kept here as data so that every argument fpvm plans is held against them:

makefs(8) (usr.sbin/makefs/makefs.8)::

    makefs [-DxZ] [-B endian] [-b free-blocks] [-d debug-mask] [-F mtree-specfile] [-f free-files]
           [-M minimum-size] [-m maximum-size] [-N userdb-dir] [-O offset] [-o fs-options]
           [-R roundup-size] [-S sector-size] [-s image-size] [-T timestamp] [-t fs-type]
           image-file directory | manifest [extra-directory ...]

    -t fs-type: ffs (default), cd9660, msdos, zfs.  -B: 4321, big, be, 1234, little, le.
    Sizes: a decimal number with an optional suffix b, k, m, g, t or w.
    FFS-specific options: avgfilesize avgfpdir bsize density fsize label maxbpg minfree optimization
      extent maxbpcg version softupdates
    msdos-specific options: backup_sector block_size bootstrap bytes_per_sector create_size
      directory_entries drive_heads fat_type floppy hidden_sectors info_sector media_descriptor num_FAT
      OEM_string offset reserved_sectors sectors_per_cluster sectors_per_fat sectors_per_track size
      volume_id volume_label
    zfs-specific options: ashift bootfs mssize path verify-txgs poolguid poolname rootpath fs
      "poolname ... This option must be specified."
      "rootpath ... For creating bootable pools, the rootpath should be set to /. At least one dataset
       must have a mountpoint equal to rootpath."
      "fs ... <dataset>[;<prop1=v1>[;<prop2=v2>[;...]]] ... must belong to the pool's namespace ...
       A dataset must exist at each level of the pool's namespace."
      dataset properties: atime canmount compression exec mountpoint setuid

mkimg(1) (usr.bin/mkimg/mkimg.1)::

    mkimg [-H heads] [-P blksz] [-S secsz] [-T tracksz] [-b bootcode] [-c capacity] [-f format]
          [-o outfile] [-v] [-y] [-s scheme [-p partition ...]]

    formats: raw qcow qcow2 vhd vhdf vmdk; "-p freebsd-ufs/backup:=file-system.ufs" (a label after
    the type, ":=" a file's contents); partition types are gpart(8)'s symbolic names.

gpart(8) (lib/geom/part/gpart.8)::

    gpart show [-l | -r] [-p] [geom ...]
    gpart recover [-f flags] geom
    gpart resize -i index [-a alignment] [-s size] [-f flags] geom
    PARTITION TYPES (symbolic): apple-boot bios-boot efi freebsd freebsd-boot freebsd-swap freebsd-ufs
      freebsd-vinum freebsd-zfs ...

zpool-list(8), zpool get (zpool-set.8) and zfs get (zfs-set.8), OpenZFS as in
sys/contrib/openzfs/man/man8::

    zpool list [-HgLpPv] [-o property[,property]…] [-T u|d] [pool]… [interval [count]]
    zpool get [-Hp] [-o field[,field]…] all|property[,property]… [pool]…
    zfs get [-r|-d depth] [-Hp] [-o field[,field]…] [-s source[,source]…] [-t type[,type]…]
            all|property[,property]… [filesystem|volume|snapshot|bookmark]…
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SIZE = re.compile(r"^\d+[bkmgtw]?(x\d+[bkmgtw]?)*$")


@dataclass(frozen=True)
class Synopsis:
    """One command's options (letter -> takes a value) and how many operands it accepts."""

    words: tuple[str, ...]  # ("makefs",) or ("zpool", "list")
    options: dict[str, bool]
    min_operands: int
    max_operands: int | None  # None: any number
    repeatable: frozenset[str] = frozenset()

    def parse(self, argv: list[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
        """getopt(3) as the BSD tools use it: options first, then operands; fails on anything else."""
        n = len(self.words)
        assert argv[:n] == list(self.words), f"not {' '.join(self.words)}: {argv}"
        opts: list[tuple[str, str | None]] = []
        i = n
        while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
            word = argv[i]
            if word == "--":
                i += 1
                break
            letters = word[1:]
            for j, letter in enumerate(letters):
                flag = "-" + letter
                assert flag in self.options, f"{' '.join(self.words)}: {flag} is not in the synopsis ({argv})"
                if self.options[flag]:
                    value = letters[j + 1 :]
                    if not value:
                        i += 1
                        assert i < len(argv), f"{flag} needs a value: {argv}"
                        value = argv[i]
                    opts.append((flag, value))
                    break
                opts.append((flag, None))
            i += 1
        operands = argv[i:]
        seen = [f for f, _ in opts]
        for flag in set(seen):
            if seen.count(flag) > 1:
                assert flag in self.repeatable, f"{flag} given twice: {argv}"
        assert len(operands) >= self.min_operands, f"too few operands: {argv}"
        if self.max_operands is not None:
            assert len(operands) <= self.max_operands, f"too many operands: {argv}"
        return opts, operands


MAKEFS = Synopsis(
    ("makefs",),
    {
        "-D": False, "-x": False, "-Z": False, "-B": True, "-b": True, "-d": True, "-F": True, "-f": True,
        "-M": True, "-m": True, "-N": True, "-O": True, "-o": True, "-R": True, "-S": True, "-s": True,
        "-T": True, "-t": True,
    },
    2,
    None,
    frozenset({"-o"}),
)  # fmt: skip
MAKEFS_TYPES = ("ffs", "cd9660", "msdos", "zfs")
MAKEFS_ENDIAN = ("4321", "big", "be", "1234", "little", "le")
MAKEFS_OPTIONS: dict[str, frozenset[str]] = {
    "ffs": frozenset({
        "avgfilesize", "avgfpdir", "bsize", "density", "fsize", "label", "maxbpg", "minfree",
        "optimization", "extent", "maxbpcg", "version", "softupdates",
    }),
    "msdos": frozenset({
        "backup_sector", "block_size", "bootstrap", "bytes_per_sector", "create_size",
        "directory_entries", "drive_heads", "fat_type", "floppy", "hidden_sectors", "info_sector",
        "media_descriptor", "num_FAT", "OEM_string", "offset", "reserved_sectors", "sectors_per_cluster",
        "sectors_per_fat", "sectors_per_track", "size", "volume_id", "volume_label",
    }),
    "zfs": frozenset({
        "ashift", "bootfs", "mssize", "path", "verify-txgs", "poolguid", "poolname", "rootpath", "fs",
    }),
}  # fmt: skip
ZFS_DATASET_PROPERTIES = frozenset({"atime", "canmount", "compression", "exec", "mountpoint", "setuid"})

MKIMG = Synopsis(
    ("mkimg",),
    {
        "-H": True, "-P": True, "-S": True, "-T": True, "-b": True, "-c": True, "-f": True, "-o": True,
        "-v": False, "-y": False, "-s": True, "-p": True,
    },
    0,
    0,
    frozenset({"-p"}),
)  # fmt: skip
MKIMG_FORMATS = ("raw", "qcow", "qcow2", "vhd", "vhdf", "vmdk")
GPART_TYPES = frozenset({
    "apple-boot", "bios-boot", "efi", "freebsd", "freebsd-boot", "freebsd-swap", "freebsd-ufs",
    "freebsd-vinum", "freebsd-zfs",
})  # fmt: skip
MKIMG_PARTITION = re.compile(
    r"^(?P<type>[a-z0-9-]+)(/(?P<label>[A-Za-z0-9_.-]+))?(?P<how>:=|::|:-)(?P<what>.+)$"
)

GPART_SHOW = Synopsis(("gpart", "show"), {"-l": False, "-r": False, "-p": False}, 0, None)
ZPOOL_LIST = Synopsis(
    ("zpool", "list"),
    {"-H": False, "-g": False, "-L": False, "-p": False, "-P": False, "-v": False, "-o": True, "-T": True},
    0,
    None,
)
ZPOOL_GET = Synopsis(("zpool", "get"), {"-H": False, "-p": False, "-o": True}, 1, None)
ZFS_GET = Synopsis(
    ("zfs", "get"),
    {"-r": False, "-d": True, "-H": False, "-p": False, "-o": True, "-s": True, "-t": True},
    1,
    None,
)
SYNOPSES = (GPART_SHOW, ZPOOL_LIST, ZPOOL_GET, ZFS_GET)


def check_makefs(argv: list[str]) -> dict[str, object]:
    """Validate a planned makefs command (the options the file system type accepts included)."""
    opts, operands = MAKEFS.parse(argv)
    values = dict((f, v) for f, v in opts if f != "-o")
    fstype = values.get("-t", "ffs")
    assert fstype in MAKEFS_TYPES, f"makefs -t {fstype}: not a type makefs(8) lists"
    if "-B" in values:
        assert values["-B"] in MAKEFS_ENDIAN, values["-B"]
    if "-s" in values:
        assert SIZE.match(str(values["-s"])), f"makefs -s {values['-s']}: not a makefs(8) size"
    fs_options = [str(v) for f, v in opts if f == "-o"]
    keys = []
    for option in fs_options:
        key, sep, _ = option.partition("=")
        assert sep, f"makefs -o {option}: options are keyword=value"
        assert key in MAKEFS_OPTIONS[str(fstype)], f"makefs -t {fstype}: unknown option {key!r}"
        keys.append(key)
    assert len(operands) >= 2
    out: dict[str, object] = {
        "type": fstype,
        "options": fs_options,
        "image": operands[0],
        "dirs": operands[1:],
    }
    if fstype == "zfs":
        out["pool"] = check_zfs_options(fs_options)
    return out


def check_zfs_options(options: list[str]) -> dict[str, dict[str, str]]:
    """makefs(8)'s rules for ``-t zfs``: poolname given, datasets in its namespace with every level
    present, known properties only, a dataset mounted at rootpath, bootfs one of the datasets."""
    single: dict[str, str] = {}
    datasets: dict[str, dict[str, str]] = {}
    for option in options:
        key, _, value = option.partition("=")
        if key == "fs":
            name, *props = value.split(";")
            assert name not in datasets, f"dataset {name} given twice"
            parsed = {}
            for prop in props:
                pkey, sep, pval = prop.partition("=")
                assert sep and pkey in ZFS_DATASET_PROPERTIES, (
                    f"fs={value}: {prop!r} is not a settable property"
                )
                parsed[pkey] = pval
            datasets[name] = parsed
        else:
            assert key not in single, f"{key} given twice"
            single[key] = value
    pool = single.get("poolname")
    assert pool, "makefs -t zfs: poolname must be specified"
    for name in datasets:
        assert name == pool or name.startswith(pool + "/"), f"{name} is outside pool {pool}"
        parts = name.split("/")
        for depth in range(2, len(parts)):
            parent = "/".join(parts[:depth])
            assert parent in datasets, f"{name}: {parent} must exist as well"
    rootpath = single.get("rootpath", f"/{pool}")
    mounts = [props.get("mountpoint") for props in datasets.values()]
    assert rootpath in mounts, f"no dataset has mountpoint {rootpath} (rootpath)"
    if "bootfs" in single:
        assert single["bootfs"] in datasets, f"bootfs {single['bootfs']} is not a dataset"
    return datasets


def check_mkimg(argv: list[str]) -> list[dict[str, str]]:
    """Validate a planned mkimg command; returns its partitions in order."""
    opts, _ = MKIMG.parse(argv)
    values = {f: v for f, v in opts if f != "-p"}
    assert values.get("-s") == "gpt", "fpvm's disks are GPT"
    assert values.get("-f", "raw") in MKIMG_FORMATS
    flags = [f for f, _ in opts]
    assert "-s" in flags and all(flags.index("-s") < i for i, f in enumerate(flags) if f == "-p"), (
        "-p partitions follow -s scheme"
    )
    parts = []
    for flag, spec in opts:
        if flag != "-p":
            continue
        match = MKIMG_PARTITION.match(str(spec))
        assert match, f"mkimg -p {spec}: not type[/label]:=file"
        assert match["type"] in GPART_TYPES, f"mkimg -p {spec}: {match['type']} is not a gpart(8) type"
        parts.append({k: v or "" for k, v in match.groupdict().items()})
    return parts


def check_command(argv: list[str]) -> None:
    """One of the gpart/zpool/zfs commands the FreeBSD checks run."""
    for synopsis in SYNOPSES:
        if argv[: len(synopsis.words)] == list(synopsis.words):
            synopsis.parse(argv)
            return
    raise AssertionError(f"no synopsis for {argv}")
