"""``@dataclass`` for the engine's classes, without the cost of ``dataclasses`` at import.

``dataclasses.dataclass`` writes ``__init__``, ``__repr__`` and ``__eq__`` of every class as source and
compiles it with ``exec``, and the ``dataclasses`` module itself pulls in ``inspect`` (with ``ast``,
``dis``, ``tokenize``). For the ~40 classes of the engine (the model above all) that was most of the
import time of ``fpvm.ignition``, paid again by every guest command, which is a fresh interpreter.

Classes declared with this module's ``dataclass`` and ``field`` behave as ``@dataclass`` classes do:
the same constructor (positional or keyword, defaults and default factories), ``repr``, ``==`` and no
hash. They share one copy of each method, driven by a per-class table (``record_fields``). They are
still real dataclasses for ``dataclasses.fields``/``replace``/``asdict``/``is_dataclass``: the first
time one of those asks for ``__dataclass_fields__``, the standard ``dataclasses`` builds it (on a
shadow class, with the same fields) and it is kept on the class. Type checkers see the standard
``dataclass``/``field``. Only the plain form is supported: ``@dataclass`` without arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

_C = TypeVar("_C", bound=type)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class RecordField(NamedTuple):
    """One field: its name, its annotation as written (a string here), default or factory, metadata."""

    name: str
    type: Any
    default: Any
    default_factory: Any
    metadata: dict[str, Any]


class _FieldSpec:
    """What ``field(...)`` returns at run time, until the class is processed."""

    __slots__ = ("default", "default_factory", "metadata")

    def __init__(self, default: Any, default_factory: Any, metadata: dict[str, Any] | None) -> None:
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.default = default
        self.default_factory = default_factory
        self.metadata = {} if metadata is None else dict(metadata)


def _field(
    *, default: Any = MISSING, default_factory: Any = MISSING, metadata: dict[str, Any] | None = None
) -> Any:
    return _FieldSpec(default, default_factory, metadata)


def record_fields(cls_or_instance: Any) -> tuple[RecordField, ...]:
    """The fields of a class made with this module's ``dataclass`` (or of its instance), in order."""
    fields: tuple[RecordField, ...] = cls_or_instance._record_fields
    return fields


def is_record(obj: Any) -> bool:
    """Whether ``obj`` is a class made with this module's ``dataclass`` or an instance of one."""
    return hasattr(obj if isinstance(obj, type) else type(obj), "_record_fields")


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    # Attributes are set one by one (not through ``self.__dict__``): an instance whose ``__dict__``
    # has been materialised reads its attributes about three times slower afterwards (CPython 3.11).
    if not args and not kwargs:  # the decoder's case: every field at its default
        for name, default, factory in self._record_defaults:
            setattr(self, name, default if factory is None else factory())
        return
    table: tuple[RecordField, ...] = self._record_fields
    if len(args) > len(table):
        raise TypeError(
            f"{type(self).__qualname__}.__init__() takes {len(table) + 1} positional arguments "
            f"but {len(args) + 1} were given"
        )
    for i, (name, _, default, factory, _) in enumerate(table):
        if i < len(args):
            if name in kwargs:
                raise TypeError(
                    f"{type(self).__qualname__}.__init__() got multiple values for argument '{name}'"
                )
            setattr(self, name, args[i])
        elif name in kwargs:
            setattr(self, name, kwargs.pop(name))
        elif factory is not MISSING:
            setattr(self, name, factory())
        elif default is not MISSING:
            setattr(self, name, default)
        else:
            raise TypeError(f"{type(self).__qualname__}.__init__() missing 1 required argument: '{name}'")
    if kwargs:
        unknown = next(iter(kwargs))
        raise TypeError(
            f"{type(self).__qualname__}.__init__() got an unexpected keyword argument '{unknown}'"
        )


def _required(qualname: str, table: tuple[RecordField, ...] | list[RecordField]) -> Any:
    """The "missing argument" error of a class with required fields, called without arguments."""
    missing = [f.name for f in table if f.default is MISSING and f.default_factory is MISSING]

    def fail() -> Any:
        raise TypeError(
            f"{qualname}.__init__() missing {len(missing)} required argument(s): {', '.join(missing)}"
        )

    return fail


def _repr(self: Any) -> str:
    inner = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self._record_fields)
    return f"{type(self).__qualname__}({inner})"


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    names = [f.name for f in self._record_fields]
    return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)


class _DataclassFields:
    """``__dataclass_fields__`` made on first use by the standard ``dataclasses`` (see the module)."""

    def __get__(self, instance: Any, owner: type) -> Any:
        import dataclasses

        # The class that declared the fields (``owner`` may be an undecorated subclass of it).
        owner = next(k for k in owner.__mro__ if vars(k).get("__dataclass_fields__") is self)
        table: tuple[RecordField, ...] = vars(owner)["_record_fields"]
        namespace: dict[str, Any] = {
            "__module__": owner.__module__,
            "__qualname__": owner.__qualname__,
            "__doc__": owner.__doc__,
            "__annotations__": {f.name: f.type for f in table},
        }
        for f in table:
            namespace[f.name] = dataclasses.field(
                default=dataclasses.MISSING if f.default is MISSING else f.default,
                default_factory=dataclasses.MISSING if f.default_factory is MISSING else f.default_factory,
                metadata=f.metadata,
            )
        shadow: Any = dataclasses.dataclass(init=False, repr=False, eq=False)(
            type(owner.__name__, (), namespace)
        )
        target: Any = owner
        target.__dataclass_params__ = vars(shadow)["__dataclass_params__"]
        target.__dataclass_fields__ = vars(shadow)["__dataclass_fields__"]
        return target.__dataclass_fields__


def _record(cls: _C) -> _C:
    own = vars(cls)
    annotations: dict[str, Any] = own.get("__annotations__", {})
    table: list[RecordField] = []
    seen_default = False
    for name, annotation in annotations.items():
        value = own.get(name, MISSING)
        spec = value if isinstance(value, _FieldSpec) else _FieldSpec(value, MISSING, None)
        if isinstance(spec.default, list | dict | set):  # as dataclasses: shared by every instance
            raise ValueError(
                f"mutable default {type(spec.default)} for field {name} is not allowed: use default_factory"
            )
        has_default = spec.default is not MISSING or spec.default_factory is not MISSING
        if seen_default and not has_default:
            raise TypeError(f"non-default argument {name!r} follows default argument")
        seen_default = seen_default or has_default
        table.append(RecordField(name, annotation, spec.default, spec.default_factory, spec.metadata))
    target: Any = cls
    for f in table:  # as dataclasses: the class attribute is the default, or absent
        if f.default is MISSING:
            if f.name in own:
                delattr(cls, f.name)
        else:
            setattr(cls, f.name, f.default)
    target._record_fields = tuple(table)
    if all(f.default is not MISSING or f.default_factory is not MISSING for f in table):
        target._record_defaults = tuple(
            (f.name, f.default, None if f.default_factory is MISSING else f.default_factory) for f in table
        )
    else:  # a required field: calling without arguments must fail as usual
        target._record_defaults = ((table[0].name, None, _required(cls.__qualname__, table)),)
    setattr(target, "__match_args__", tuple(f.name for f in table))  # noqa: B010 (mypy: read-only)
    target.__dataclass_fields__ = _DataclassFields()
    if cls.__doc__ is None:
        target.__doc__ = f"{cls.__name__}({', '.join(f.name for f in table)})"
    for name, method in (("__init__", _init), ("__repr__", _repr), ("__eq__", _eq)):
        if name not in own:  # as dataclasses: a method the class defines itself is kept
            setattr(cls, name, method)
    if own.get("__hash__") is None:  # as @dataclass(eq=True): mutable, so not hashable
        target.__hash__ = None
    return cls


if TYPE_CHECKING:
    from dataclasses import dataclass as dataclass
    from dataclasses import field as field
else:
    dataclass = _record
    field = _field
