"""Read podman's Ignition config out of a FreeBSD Hyper-V KVP pool file.

podman's Hyper-V provider (5.x, Windows) cuts the config into pieces (libhvee ``ginsu.Dice``: reads of
990 bytes, the last one shorter) and adds each piece as a KVP item named ``ignition.config.<i>``, i from
0, with ``Source = 0`` (libhvee ``createKvpItem``), which is the host's external pool, pool 0.

On FreeBSD the kernel driver (hv_kvp) hands each item to ``hv_kvp_daemon``, which devd(8) starts when
``/dev/hv_kvp_dev`` appears (sbin/devd/hyperv.conf). The daemon keeps every pool as a file,
``/var/db/hyperv/pool/.kvp_pool_<pool>`` (``kvp_file_init``), written as an array of fixed-size
records with no header (``kvp_update_file``)::

    struct kvp_record {
        char key[HV_KVP_EXCHANGE_MAX_KEY_SIZE];      /* 512 */
        char value[HV_KVP_EXCHANGE_MAX_VALUE_SIZE];  /* 2048 */
    };

Both sizes include the NUL terminator (sys/dev/hyperv/utilities/hv_kvp.h). The daemon copies only
``key_size``/``value_size`` bytes into a record whose memory is not cleared, so bytes after the first
NUL are meaningless and are ignored here; a field without a NUL is a corrupt record.

This module reads the file only, never the device: the daemon owns the protocol. Standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from fpvm.fsutil import open_regular
from fpvm.ignition.budget import MAX_RESOURCE_BYTES

KEY_SIZE = 512
VALUE_SIZE = 2048
RECORD_SIZE = KEY_SIZE + VALUE_SIZE
POOL_DIR = "/var/db/hyperv/pool"
EXTERNAL_POOL = 0  # HV_KVP_POOL_EXTERNAL: items the host adds (Msvm_KvpExchangeDataItem Source 0)
IGNITION_PREFIX = b"ignition.config."
PODMAN_PIECE = 990  # libhvee KvpValueMaxLen: podman's slice of the config per item
MAX_CONFIG_BYTES = MAX_RESOURCE_BYTES
# Every piece of the largest config, plus 4096 records for the host's and the daemon's other items.
MAX_RECORDS = MAX_CONFIG_BYTES // PODMAN_PIECE + 1 + 4096


class KvpError(ValueError):
    """A pool file or its ``ignition.config.N`` items cannot be trusted."""


def pool_file(pool: int = EXTERNAL_POOL, pool_dir: str = POOL_DIR) -> str:
    """The guest path of one pool's file, as hv_kvp_daemon names it."""
    return f"{pool_dir.rstrip('/')}/.kvp_pool_{pool}"


def _field(raw: bytes, index: int, what: str) -> bytes:
    end = raw.find(b"\0")
    if end < 0:
        raise KvpError(f"record {index}: {what} is not NUL-terminated within {len(raw)} bytes")
    return raw[:end]


def _check_length(size: int) -> None:
    if size % RECORD_SIZE:
        whole = size // RECORD_SIZE
        raise KvpError(
            f"pool file is {size} bytes, not a whole number of {RECORD_SIZE}-byte records "
            f"(record {whole} is truncated to {size - whole * RECORD_SIZE} bytes)"
        )


def read_pool(
    path: str, prefix: bytes = IGNITION_PREFIX, max_records: int = MAX_RECORDS
) -> list[tuple[bytes, bytes]]:
    """(key, value) of the records of the pool file ``path`` whose key starts with ``prefix``.

    The file is outside input: opened without following a final symlink, never a FIFO or device
    (``fpvm.fsutil.open_regular``), and streamed record by record, so memory is bounded by what is
    kept (at most MAX_CONFIG_BYTES of values), not by the file; every record is still checked (a
    corrupt one is an error). A file of more than ``max_records`` records is refused before it is
    read, one that grows past it while being read as well.
    """
    fd, st = open_regular(path)
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > max_records * RECORD_SIZE:
            raise KvpError(
                f"pool file is {st.st_size} bytes, more than {max_records} records of {RECORD_SIZE} bytes"
            )
        _check_length(st.st_size)
        records: list[tuple[bytes, bytes]] = []
        kept = 0
        index = 0
        while raw := fh.read(RECORD_SIZE):
            if len(raw) < RECORD_SIZE:
                _check_length(index * RECORD_SIZE + len(raw))
            if index >= max_records:
                raise KvpError(f"pool file grew past {max_records} records while being read")
            key, value = _field(raw[:KEY_SIZE], index, "key"), _field(raw[KEY_SIZE:], index, "value")
            index += 1
            if key and key.startswith(prefix):
                kept += len(value)
                if kept > MAX_CONFIG_BYTES:
                    raise KvpError(
                        f"{prefix.decode()}N values exceed the {MAX_CONFIG_BYTES}-byte config limit"
                    )
                records.append((key, value))
    return records


def assemble(records: Iterable[tuple[bytes, bytes]], prefix: bytes = IGNITION_PREFIX) -> bytes | None:
    """Concatenate ``<prefix>0``, ``<prefix>1``, ... in numeric order; None when there is none.

    A missing index, a duplicate or a suffix that is not a plain decimal number is an error: the
    result would silently be a different config.
    """
    parts: dict[int, bytes] = {}
    for key, value in records:
        if not key.startswith(prefix):
            continue
        suffix = key[len(prefix) :]
        if not suffix.isdigit() or (len(suffix) > 1 and suffix.startswith(b"0")):
            raise KvpError(f"unexpected key {key.decode('utf-8', 'replace')!r}")
        index = int(suffix)
        if index in parts:
            raise KvpError(f"key {key.decode()!r} appears twice")
        parts[index] = value
    if not parts:
        return None
    last = max(parts)
    missing = [i for i in range(last + 1) if i not in parts]
    if missing:
        names = ", ".join(prefix.decode() + str(i) for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise KvpError(f"missing {names}{more} (found {len(parts)} of 0..{last})")
    return b"".join(parts[i] for i in range(last + 1))


def read_ignition(root: str = "/", pool_path: str | None = None) -> tuple[bytes | None, int]:
    """The config assembled from the pool file at ``pool_path`` under ``root``, and its piece count.

    Raises FileNotFoundError when the pool file does not exist (hv_kvp_daemon has not run), OSError
    when it cannot be read or is not a regular file (``fpvm.fsutil.SpecialFileError``), KvpError when
    it is corrupt or too large. (None, 0) when no ``ignition.config.N`` item is in it.
    """
    guest_path = pool_path or pool_file()
    path = os.path.join(root, guest_path.lstrip("/"))
    records = read_pool(path)
    config = assemble(records)
    count = sum(1 for key, _ in records if key.startswith(IGNITION_PREFIX))
    return config, (count if config is not None else 0)

