"""Filling the model from parsed JSON for one spec version, the way Go's decoder fills upstream's types.

Rules mirrored from Go's ``encoding/json`` (they decide whether upstream accepts a config):
keys match fields exactly or else case-insensitively; a repeated key is decoded again *into* the
value already there (objects merge, list elements are reused); ``null`` clears pointers and lists
and leaves everything else alone; a value of the wrong JSON type is an error; keys the version does
not know are ignored (and reported as "unused key", a warning). Which keys a version knows comes
from the ``since`` metadata in ``model``.
"""

from __future__ import annotations

import re
import sys
from typing import Any, NamedTuple

from fpvm.ignition import model
from fpvm.ignition.errors import Report
from fpvm.ignition.jsonread import Num, Obj, clean_str
from fpvm.ignition.model import Version
from fpvm.ignition.records import dataclass, field, record_fields

_INT64 = (-(2**63), 2**63 - 1)


class FieldSpec(NamedTuple):
    attr: str
    key: str
    since: Version
    kind: str  # "str" | "int" | "bool" | "obj" | "list"
    pointer: bool  # upstream's field is a pointer (absent/null -> None)
    item: type[Any] | None  # dataclass of obj/list items; None for list of strings


_FIELDS: dict[type[Any], tuple[FieldSpec, ...]] = {}


def fields_of(cls: type[Any]) -> tuple[FieldSpec, ...]:
    """The JSON fields of a model class (cached: called for every decoded object)."""
    cached = _FIELDS.get(cls)
    if cached is not None:
        return cached
    namespace = vars(sys.modules[cls.__module__])
    out = []
    for f in record_fields(cls):
        kind, pointer, item = _hint(f.type, namespace)
        out.append(FieldSpec(f.name, f.metadata["json"], f.metadata["since"], kind, pointer, item))
    _FIELDS[cls] = tuple(out)
    return _FIELDS[cls]


def _hint(hint: Any, namespace: dict[str, Any]) -> tuple[str, bool, type[Any] | None]:
    """(kind, pointer, item) of one field's annotation, as written in ``model`` (a string there).

    The model's annotations are only ``str``/``int``/``bool``, ``X | None``, ``list[str]``,
    ``list[Model]`` and ``Model``; reading them as text spares the guest ``typing.get_type_hints``
    (an ``eval`` per field) on every run.
    """
    text = hint if isinstance(hint, str) else getattr(hint, "__name__", str(hint))
    if text.startswith("list[") and text.endswith("]"):
        inner = text[5:-1].strip()
        return "list", False, None if inner == "str" else namespace[inner]
    pointer = text.endswith(" | None")
    base = text.removesuffix(" | None").strip()
    if base in _SCALARS:
        return _SCALARS[base], pointer, None
    if pointer:
        raise TypeError(f"unsupported model annotation {text!r}")
    return "obj", False, namespace[base]


_SCALARS = {"str": "str", "int": "int", "bool": "bool"}


def _fold(s: str) -> str:
    """Go's foldName: ASCII upper-cased; the two non-ASCII folds that reach ASCII letters mapped."""
    return "".join(c.upper() if c.isascii() else {"ſ": "S", "K": "K"}.get(c, c) for c in s)


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | Num):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Obj):
        return "object"
    return "array"


def key_path(path: str, key: str) -> str:
    """The JSON path of ``key`` under ``path``, written as upstream writes it (``$.a.b``, any key)."""
    return f"{path}.{key}"


# Which kind of reference a Resource is, by where it sits (3.0 had a type for each).
_CONTEXTS: dict[tuple[type[Any], str], str] = {
    (model.File, "contents"): "file",
    (model.File, "append"): "file",
    (model.TLS, "certificateAuthorities"): "ca",
}
# Go's named string types of list elements (for messages).
_STRING_TYPES = {
    "groups": "types.Group",
    "sshAuthorizedKeys": "types.SSHAuthorizedKey",
    "devices": "types.Device",
    "noProxy": "types.NoProxyItem",
    "mountOptions": "types.MountOption",
    "openOptions": "types.OpenOption",
    "shouldExist": "types.KernelArgument",
    "shouldNotExist": "types.KernelArgument",
}


@dataclass
class Decoder:
    """One decoding pass; ``present`` collects paths of objects that were given (non-null)."""

    version: Version
    report: Report
    top: str = "Config"
    present: set[str] = field(default_factory=set)

    def _known(self, cls: type[Any], spec: FieldSpec, ctx: str) -> bool:
        if spec.since <= self.version:
            return True
        # Spec 3.0 had compression on file contents only (FileContents), not on other references.
        return ctx == "file" and cls is model.Resource and spec.key == "compression"

    def type_error(self, path: str, value: Any, gotype: str, dotted: str) -> None:
        what = json_kind(value)
        if isinstance(value, Num | int) and not isinstance(value, bool) and gotype == "int":
            what = f"number {value}"
        qualified = "util.versionStub" if self.top == "versionStub" else f"types.{self.top}"
        if not dotted:
            where = f"Go value of type {qualified}"
        elif dotted.rpartition(".")[2].isdigit():  # a list element: Go names no struct field
            where = f"{self.top}.{dotted} of type {gotype}"
        else:
            where = f"Go struct field {self.top}.{dotted} of type {gotype}"
        self.report.error(path, f"json: cannot unmarshal {what} into {where}")

    def go_type(self, cls: type[Any], ctx: str) -> str:
        """Upstream's Go type name for ``cls`` in this version (for messages)."""
        if cls is model.Resource and self.version < (3, 1):
            return {"file": "types.FileContents", "ca": "types.CaReference"}.get(ctx, "types.ConfigReference")
        if cls is model.ClevisCustom and self.version < (3, 3):
            return "types.Custom"
        if cls is _IgnitionStub:
            return "struct { Version string }"
        return f"types.{cls.__name__}"

    def into(self, target: Any, value: Any, path: str, dotted: str, exact: bool, ctx: str = "") -> None:
        """Decode a JSON object ``value`` into the dataclass instance ``target`` in place."""
        if value is None:
            return
        cls = type(target)
        if not isinstance(value, Obj):
            self.type_error(path, value, self.go_type(cls, ctx), dotted)
            return
        specs = [s for s in fields_of(cls) if self._known(cls, s, ctx)]
        seen: set[str] = set()
        for key, item in value:
            spec = next((s for s in specs if s.key == key), None)
            key_exact = spec is not None
            if spec is None:
                folded = _fold(key)
                spec = next((s for s in specs if _fold(s.key) == folded), None)
                if exact:
                    self.report.warning(key_path(path, key), f"unused key {key}")
            if key in seen:
                self.report.warning(key_path(path, key), f"duplicate key {key}")
            seen.add(key)
            if spec is None:
                continue
            sub_path = key_path(path, spec.key)
            sub_dotted = f"{dotted}.{key}" if dotted else key  # Go names the key as written
            sub_ctx = _CONTEXTS.get((cls, spec.key), "")
            self.field(target, spec, item, sub_path, sub_dotted, exact and key_exact, sub_ctx)

    def field(
        self, target: Any, spec: FieldSpec, value: Any, path: str, dotted: str, exact: bool, ctx: str
    ) -> None:
        current = getattr(target, spec.attr)
        if spec.kind == "obj":
            if value is None:
                self.present.discard(path)
                # Spec 3.2's clevis objects were pointers: a null one is simply absent upstream.
                pointer = self.version < (3, 3) and type(target) in (model.Luks, model.Clevis)
                self.null_object(path, exact and not pointer)
                return
            if isinstance(value, Obj):
                self.present.add(path)
            assert spec.item is not None
            self.into(current, value, path, dotted, exact, ctx)
        elif spec.kind == "list":
            if value is None:
                setattr(target, spec.attr, [])
                return
            if not isinstance(value, list) or isinstance(value, Obj):
                name = self.go_type(spec.item, ctx) if spec.item else _STRING_TYPES.get(spec.key, "string")
                self.type_error(path, value, f"[]{name}", dotted)
                return
            items = self.items(spec.item, current, value, path, dotted, exact, ctx, spec.key)
            setattr(target, spec.attr, items)
        else:
            if value is None:
                if spec.pointer:
                    setattr(target, spec.attr, None)
                return
            decoded = self.scalar(spec.kind, value, path, dotted)
            if decoded is not None:
                setattr(target, spec.attr, decoded)

    def items(
        self,
        item: type[Any] | None,
        old: list[Any],
        value: list[Any],
        path: str,
        dotted: str,
        exact: bool,
        ctx: str,
        key: str,
    ) -> list[Any]:
        out: list[Any] = []
        for i, element in enumerate(value):
            p, d = f"{path}[{i}]", f"{dotted}.{i}"
            if item is None:
                base = old[i] if i < len(old) else ""
                if element is None:
                    out.append(base)
                    continue
                decoded = self.scalar("str", element, p, d, _STRING_TYPES.get(key, "string"))
                out.append(base if decoded is None else decoded)
            else:
                base = old[i] if i < len(old) else item()
                if element is None:
                    self.null_object(p, exact)
                self.into(base, element, p, d, exact, ctx)
                out.append(base)
        return out

    def null_object(self, path: str, exact: bool) -> None:
        """Upstream's unused-key pass warns where an object is expected but ``null`` is written."""
        if exact:
            dotted = re.sub(r"\[(\d+)\]", r".\1", path)
            self.report.warning(
                path,
                f"context tree does not match content tree at {dotted}. Line and column reporting may be "
                "inconsistent. Unused keys may not be reported",
            )

    def scalar(self, kind: str, value: Any, path: str, dotted: str, gotype: str = "string") -> Any:
        if kind == "str":
            if isinstance(value, str) and not isinstance(value, Num):
                return clean_str(value)
            self.type_error(path, value, gotype, dotted)
        elif kind == "bool":
            if isinstance(value, bool):
                return value
            self.type_error(path, value, "bool", dotted)
        else:
            if isinstance(value, int) and not isinstance(value, bool) and _INT64[0] <= value <= _INT64[1]:
                return value
            self.type_error(path, value, "int", dotted)
        return None


@dataclass
class _IgnitionStub:
    version: str = field(default="", metadata={"json": "version", "since": (3, 0)})


@dataclass
class _VersionStub:
    ignition: _IgnitionStub = field(
        default_factory=_IgnitionStub, metadata={"json": "ignition", "since": (3, 0)}
    )


def read_version(raw: Any, report: Report) -> str | None:
    """The declared version as upstream's first, minimal decode sees it; ``None`` after a type error."""
    stub = _VersionStub()
    scratch = Report()
    decoder = Decoder((99, 0), scratch, top="versionStub")
    if raw is not None and not isinstance(raw, Obj):
        decoder.type_error("$", raw, "", "")
    else:
        decoder.into(stub, raw, "$", "", exact=False)
    # Only the stub's errors matter; its "unused key" findings are not upstream's.
    report.entries.extend(scratch.errors)
    if scratch.errors:
        return None
    return stub.ignition.version


def decode_config(raw: Any, version: Version, report: Report) -> tuple[model.Config, set[str]]:
    """The config as decoded by the package of spec ``version`` (errors: wrong JSON types)."""
    config = model.Config()
    decoder = Decoder(version, report)
    if raw is not None and not isinstance(raw, Obj):
        decoder.type_error("$", raw, "", "")
        return config, decoder.present
    decoder.into(config, raw, "$", "", exact=True)
    return config, decoder.present
