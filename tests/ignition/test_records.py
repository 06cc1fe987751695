"""fpvm.ignition.records: classes that behave as ``@dataclass`` ones, and a lean import of the engine.

Each behaviour is checked against a real ``dataclasses.dataclass`` twin declared the same way, so a
difference shows up as a failing comparison rather than as an assumption written into the test.
"""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fpvm.ignition import model, records


def _twins() -> tuple[type[Any], type[Any]]:
    def body(field: Any) -> dict[str, Any]:
        return {
            "__annotations__": {"name": "str", "count": "int | None", "tags": "list[str]", "extra": "str"},
            "count": None,
            "tags": field(default_factory=list, metadata={"json": "tags"}),
            "extra": field(default="x"),
            "__module__": __name__,
        }

    plain: Any = dataclasses.dataclass(type("Thing", (), body(dataclasses.field)))
    cheap: Any = records.dataclass(type("Thing", (), body(records.field)))
    return plain, cheap


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("a",), {}),
    (("a", 3), {}),
    (("a", 3, ["t"], "y"), {}),
    ((), {"name": "a", "extra": "z"}),
    (("a",), {"tags": ["u"]}),
    # errors
    ((), {}),
    (("a", 1, [], "e", "too many"), {}),
    (("a",), {"name": "twice"}),
    (("a",), {"unknown": 1}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_constructor_matches_dataclass(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    plain, cheap = _twins()
    try:
        expected = plain(*args, **kwargs)
    except TypeError:
        with pytest.raises(TypeError):
            cheap(*args, **kwargs)
        return
    got = cheap(*args, **kwargs)
    assert repr(got) == repr(expected)
    assert vars(got) == vars(expected)
    assert list(vars(got)) == list(vars(expected))  # same attribute order


def test_methods_and_dataclasses_functions_match() -> None:
    plain, cheap = _twins()
    a, b = cheap("a", 1), cheap("a", 1)
    assert a == b and a is not b
    assert a != cheap("a", 2)
    assert a.__eq__(plain("a", 1)) is NotImplemented
    assert cheap.__hash__ is None and plain.__hash__ is None
    assert a.tags is not b.tags  # a fresh default per instance
    assert cheap.__match_args__ == plain.__match_args__
    assert cheap.count is None and not hasattr(cheap, "tags")  # class attributes as dataclasses leaves them
    assert dataclasses.is_dataclass(cheap) and dataclasses.is_dataclass(a)
    fields = [(f.name, f.type, f.default, f.default_factory, dict(f.metadata)) for f in dataclasses.fields(a)]
    expected = [
        (f.name, f.type, f.default, f.default_factory, dict(f.metadata)) for f in dataclasses.fields(plain)
    ]
    assert fields == expected
    assert dataclasses.asdict(a) == dataclasses.asdict(plain("a", 1))
    assert dataclasses.replace(a, extra="r") == cheap("a", 1, [], "r")
    assert copy.deepcopy(a) == a
    assert [f.name for f in records.record_fields(a)] == ["name", "count", "tags", "extra"]
    assert records.is_record(a) and records.is_record(cheap) and not records.is_record(plain)


def test_own_methods_are_kept() -> None:
    @records.dataclass
    class Shown:
        value: int = 0

        def __repr__(self) -> str:
            return "shown"

    assert repr(Shown(1)) == "shown"
    assert Shown(1) == Shown(1)


def test_model_classes_are_dataclasses_with_the_spec_metadata() -> None:
    f = {x.name: x for x in dataclasses.fields(model.Resource)}
    assert f["compression"].metadata == {"json": "compression", "since": (3, 1)}
    assert model.File(path="/a") == model.File("/a")
    assert repr(model.Verification()) == "Verification(hash=None)"


def test_importing_the_engine_leaves_heavy_modules_alone() -> None:
    # What `fpvm guest provision` pays for on every boot; these are only needed on rare paths.
    code = (
        "import sys, fpvm.ignition as i; i.parse(open(sys.argv[1], 'rb').read()); "
        "print(' '.join(m for m in sys.argv[2:] if m in sys.modules))"
    )
    config = str(Path(__file__).resolve().parents[2] / "examples/podman-5.8.2-qemu.ign")
    heavy = ["dataclasses", "inspect", "ast", "urllib.parse", "ipaddress", "threading", "http.client", "ssl"]
    heavy += ["gzip", "hashlib", "fpvm.ignition.sources", "fpvm.ignition.merge", "fpvm.ignition.http"]
    argv = [sys.executable, "-c", code, config, *heavy]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
