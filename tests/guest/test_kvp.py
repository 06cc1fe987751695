"""The Hyper-V KVP pool reader against pool files laid out the way FreeBSD's hv_kvp_daemon writes them.

Layout (freebsd-src): ``struct kvp_record { char key[HV_KVP_EXCHANGE_MAX_KEY_SIZE]; char
value[HV_KVP_EXCHANGE_MAX_VALUE_SIZE]; }`` in contrib/hyperv/tools/hv_kvp_daemon.c (blob 0b7474ab,
next to ``#define ENTRIES_PER_BLOCK 50``); the sizes 512 and 2048, "including any null terminators",
and ``HV_KVP_POOL_EXTERNAL = 0`` in sys/dev/hyperv/utilities/hv_kvp.h; the file name
``/var/db/hyperv/pool/.kvp_pool_%d`` in ``kvp_file_init()``; the file is the bare record array,
``fwrite(records, sizeof(struct kvp_record), num_records)`` in ``kvp_update_file()``; a new item is
``memcpy``'d with its own ``key_size``/``value_size`` into memory that is not cleared, in
``kvp_key_add_or_modify()`` -- hence the junk after the NUL below.

The split is podman's: ``SplitAndAddIgnition("ignition.config.", ...)`` (pkg/machine/hyperv) calls
libhvee ``ginsu.Dice``, which reads the config in 990-byte slices (``KvpValueMaxLen = 990``, the last
slice shorter) and names slice i ``ignition.config.<i>``; ``createKvpItem`` sets ``Source = 0``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from fpvm.guest import kvp

FIXTURES = Path(__file__).parent / "podman-configs"


def podman_dice(config: bytes, size: int = 990) -> list[bytes]:
    """libhvee ginsu.Dice: successive reads of ``size`` bytes until one comes back short."""
    parts = []
    for start in range(0, len(config) + 1, size):
        part = config[start : start + size]
        parts.append(part)
        if len(part) < size:
            break
    return parts


def record(key: bytes, value: bytes, junk: bytes = b"\0") -> bytes:
    """One kvp_record: key and value NUL-terminated, the rest of each field filled with ``junk``."""
    key_field = key + b"\0" + junk * (kvp.KEY_SIZE - len(key) - 1)
    value_field = value + b"\0" + junk * (kvp.VALUE_SIZE - len(value) - 1)
    return key_field[: kvp.KEY_SIZE] + value_field[: kvp.VALUE_SIZE]


def pool_bytes(parts: list[bytes], order: list[int] | None = None, junk: bytes = b"\0") -> bytes:
    indexes = order if order is not None else list(range(len(parts)))
    return b"".join(record(b"ignition.config.%d" % i, parts[i], junk) for i in indexes)


def write_pool(root: Path, data: bytes) -> Path:
    path = root / kvp.pool_file().lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_pool_path_is_hv_kvp_daemons() -> None:
    assert kvp.pool_file() == "/var/db/hyperv/pool/.kvp_pool_0"
    assert kvp.RECORD_SIZE == 2560


@pytest.mark.parametrize("name", ["v5.7.1-hyperv.ign", "main-hyperv.ign"])
def test_podman_split_config_reassembled_byte_for_byte(tmp_path: Path, name: str) -> None:
    config = (FIXTURES / name).read_bytes()
    parts = podman_dice(config)
    assert len(parts) == 4 and all(len(p) == 990 for p in parts[:-1])
    # Another host item before the config and non-zero junk after every NUL, as the daemon leaves it.
    data = record(b"VirtualMachineName", b"podman-machine-default", b"\xaa") + pool_bytes(parts, junk=b"\xaa")
    write_pool(tmp_path, data)
    got, pieces = kvp.read_ignition(str(tmp_path))
    assert got == config
    assert pieces == 4
    assert json.loads(got)["ignition"]["version"]


def test_pieces_join_in_numeric_not_file_order(tmp_path: Path) -> None:
    config = (FIXTURES / "v5.7.1-hyperv.ign").read_bytes()
    parts = podman_dice(config, 300)  # 13 pieces: ignition.config.10 sorts before .2 as text
    order = list(range(len(parts)))
    random.Random(7).shuffle(order)
    write_pool(tmp_path, pool_bytes(parts, order))
    assert kvp.read_ignition(str(tmp_path)) == (config, len(parts))


def test_missing_piece_is_an_error(tmp_path: Path) -> None:
    parts = podman_dice((FIXTURES / "v5.7.1-hyperv.ign").read_bytes())
    write_pool(tmp_path, pool_bytes(parts, [0, 2, 3]))
    with pytest.raises(kvp.KvpError, match=r"missing ignition\.config\.1 \(found 3 of 0\.\.3\)"):
        kvp.read_ignition(str(tmp_path))


def test_truncated_record_is_an_error(tmp_path: Path) -> None:
    parts = podman_dice((FIXTURES / "v5.7.1-hyperv.ign").read_bytes())
    write_pool(tmp_path, pool_bytes(parts)[:-100])
    with pytest.raises(kvp.KvpError, match=r"record 3 is truncated to 2460 bytes"):
        kvp.read_ignition(str(tmp_path))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"k" * kvp.KEY_SIZE + b"\0" * kvp.VALUE_SIZE, "record 0: key is not NUL-terminated"),
        (b"ignition.config.0\0".ljust(kvp.KEY_SIZE, b"\0") + b"v" * kvp.VALUE_SIZE, "value is not NUL"),
        (record(b"ignition.config.0", b"a") + record(b"ignition.config.0", b"b"), "appears twice"),
        (record(b"ignition.config.01", b"a"), "unexpected key 'ignition.config.01'"),
        (record(b"ignition.config.x", b"a"), "unexpected key"),
    ],
)
def test_corrupt_records_are_errors(tmp_path: Path, data: bytes, message: str) -> None:
    write_pool(tmp_path, data)
    with pytest.raises(kvp.KvpError, match=message):
        kvp.read_ignition(str(tmp_path))


def test_absent_pool_and_pool_without_keys(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        kvp.read_ignition(str(tmp_path))
    write_pool(tmp_path, record(b"VirtualMachineName", b"x") + record(b"", b""))
    assert kvp.read_ignition(str(tmp_path)) == (None, 0)
    write_pool(tmp_path, b"")  # the daemon creates every pool file empty (O_CREAT) at start
    assert kvp.read_ignition(str(tmp_path)) == (None, 0)


def test_configurable_pool_path(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere/.kvp_pool_0"
    path.parent.mkdir()
    path.write_bytes(pool_bytes([b'{"ignition":{"version":"3.4.0"}}']))
    assert kvp.read_ignition(str(tmp_path), "/elsewhere/.kvp_pool_0") == (
        b'{"ignition":{"version":"3.4.0"}}',
        1,
    )
