"""Helpers for the package's ``msgspec.Struct`` classes where a dataclass option has no
msgspec counterpart: a field left out of ``repr`` (a secret, a bulky raw object).

A Struct's own ``__repr__`` and ``__rich_repr__`` show every field; a class that hides
some defines both with these (``repr`` like the dataclass one: ``Name(a=1, b='x')``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import msgspec


def shown_fields(obj: msgspec.Struct, hidden: frozenset[str]) -> Iterator[tuple[str, Any]]:
    """(name, value) of every field of ``obj`` but the ``hidden`` ones, in field order."""
    for name in obj.__struct_fields__:
        if name not in hidden:
            yield name, getattr(obj, name)


def repr_without(obj: msgspec.Struct, hidden: frozenset[str]) -> str:
    """``Name(a=1, b='x')`` without the ``hidden`` fields."""
    inner = ", ".join(f"{name}={value!r}" for name, value in shown_fields(obj, hidden))
    return f"{type(obj).__qualname__}({inner})"


def deep_asdict(obj: msgspec.Struct) -> dict[str, Any]:
    """What ``dataclasses.asdict`` gave for a dataclass: every Struct within (in fields,
    lists, tuples, dict values) made a dict too, containers rebuilt with their own type,
    anything else deep-copied (``msgspec.structs.asdict`` is shallow)."""
    out = _deep(obj)
    assert isinstance(out, dict)
    return out


def _deep(obj: Any) -> Any:
    if isinstance(obj, msgspec.Struct):
        return {name: _deep(getattr(obj, name)) for name in obj.__struct_fields__}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple: by position
        return type(obj)(*[_deep(v) for v in obj])
    if isinstance(obj, (list, tuple)):
        return type(obj)(_deep(v) for v in obj)
    if isinstance(obj, dict):
        if hasattr(type(obj), "default_factory"):  # a defaultdict keeps its factory
            dd = type(obj)(obj.default_factory)  # type: ignore[attr-defined]
            for k, v in obj.items():
                dd[_deep(k)] = _deep(v)
            return dd
        return type(obj)((_deep(k), _deep(v)) for k, v in obj.items())
    return copy.deepcopy(obj)
