"""Merging a child config into its parent with upstream Ignition's rules (config/merge/merge.go).

* Objects merge field by field. A scalar the spec makes optional (``None`` when absent) is taken from
  the child when the child sets it and kept from the parent otherwise; a scalar that is always present
  (``ignition.version``, the key fields such as ``path``/``name``/``device``, ``partition.number``) is
  always the child's.
* Lists of objects are keyed: an entry whose key is in the child is merged with the child's entry
  (in the parent's position); the child's new entries follow in the child's order. Keys: files,
  directories and links by ``path`` -- one key space across the three, so a child's link replaces a
  parent's file of the same path --, units and dropins by ``name``, users and groups by ``name``, disks
  and filesystems by ``device``, partitions by ``number`` (``label`` when the number is 0), raid and
  luks by ``name``, tang servers by ``url``, resources (merge configs, CAs) by ``source``, HTTP headers
  by ``name`` -- and a child header without a value deletes the parent's.
* Lists of strings are keyed by the string itself (so ``sshAuthorizedKeys`` and ``groups`` are
  de-duplicated); ``kernelArguments.shouldExist``/``shouldNotExist`` share one key space.
* A few lists are simply appended: ``files[].append``, and the command-line style ``options`` of
  filesystems, raid and luks and ``filesystems[].mountOptions``.

The result may be invalid even when both inputs are valid (upstream says so too); callers validate.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

from fpvm.ignition import model
from fpvm.ignition.records import is_record, record_fields

T = TypeVar("T")


def _partition_key(p: model.Partition) -> str:
    if p.number:
        return f"number:{p.number}"
    if p.label is not None:
        return f"label:{p.label}"
    return ""


def _source_key(r: model.Resource) -> str:
    return r.source if r.source is not None else ""


_KEYS: dict[type[Any], Callable[[Any], str]] = {
    model.Disk: lambda d: d.device,
    model.Filesystem: lambda f: f.device,
    model.HTTPHeader: lambda h: h.name,
    model.Luks: lambda lk: lk.name,
    model.File: lambda n: n.path,
    model.Directory: lambda n: n.path,
    model.Link: lambda n: n.path,
    model.Partition: _partition_key,
    model.PasswdUser: lambda u: u.name,
    model.PasswdGroup: lambda g: g.name,
    model.Raid: lambda r: r.name,
    model.Resource: _source_key,
    model.Tang: lambda t: t.url,
    model.Unit: lambda u: u.name,
    model.Dropin: lambda d: d.name,
}

# Lists that are appended rather than keyed (upstream's IgnoreDuplicates()).
_APPENDED: dict[type[Any], frozenset[str]] = {
    model.File: frozenset({"append"}),
    model.Filesystem: frozenset({"options", "mount_options"}),
    model.Luks: frozenset({"options"}),
    model.Raid: frozenset({"options"}),
}

# Lists that share one key space within their object (upstream's MergedKeys()).
_SHARED: dict[type[Any], dict[str, str]] = {
    model.Storage: {"files": "node", "directories": "node", "links": "node"},
    model.KernelArguments: {"should_exist": "karg", "should_not_exist": "karg"},
}


def merge(parent: model.Config, child: model.Config) -> model.Config:
    """The config that results from merging ``child`` into ``parent`` (neither is modified)."""
    return _merge_object(parent, child)


def _key(item: Any) -> str:
    if isinstance(item, str):
        return item
    keyer = _KEYS.get(type(item))
    if keyer is None:
        raise TypeError(f"no merge key for {type(item).__name__}")
    return keyer(item)


def _merge_object(parent: T, child: T) -> T:
    cls = type(parent)
    appended = _APPENDED.get(cls, frozenset())
    shared = _SHARED.get(cls, {})
    # Every keyed entry of the child's lists, by (key space, key): the list it is in and the entry.
    child_index: dict[tuple[str, str], tuple[str, Any]] = {}
    for f in record_fields(child):
        value = getattr(child, f.name)
        if isinstance(value, list) and f.name not in appended:
            space = shared.get(f.name, f.name)
            for item in value:
                child_index[(space, _key(item))] = (f.name, item)

    values: dict[str, Any] = {}
    for f in record_fields(parent):
        p = getattr(parent, f.name)
        c = getattr(child, f.name)
        if isinstance(p, list):
            if f.name in appended:
                values[f.name] = copy.deepcopy(p) + copy.deepcopy(c)
            else:
                values[f.name] = _merge_list(f.name, shared.get(f.name, f.name), p, c, child_index)
        elif is_record(p):
            values[f.name] = _merge_object(p, c)
        elif f.default is None:
            values[f.name] = p if c is None else c
        else:
            values[f.name] = c
    return cls(**values)


def _merge_list(
    name: str,
    space: str,
    parent: list[Any],
    child: list[Any],
    child_index: dict[tuple[str, str], tuple[str, Any]],
) -> list[Any]:
    result: list[Any] = []
    for item in parent:
        found = child_index.get((space, _key(item)))
        if found is None:
            result.append(copy.deepcopy(item))
            continue
        child_list, child_item = found
        if child_list != name:
            continue  # replaced by an entry of a sibling list (file -> link...); added with that list
        if isinstance(child_item, model.HTTPHeader) and child_item.value is None:
            continue  # a header without a value removes the parent's header
        if is_record(child_item):
            result.append(_merge_object(item, child_item))
        else:
            result.append(child_item)
    parent_keys = {_key(item) for item in parent}
    for item in child:
        if _key(item) not in parent_keys:
            result.append(copy.deepcopy(item))
    return result
