"""How a ``--json`` record is declared, and how a record is checked against it.

A record is a ``TypedDict`` whose keys carry their meaning as
``Annotated[type, "meaning"]``: ``mypy --strict`` checks every place that builds
one, the man pages list the meanings, and :func:`problems` checks a record as
it goes out (keys, nested records and the JSON type of each value).
"""

from __future__ import annotations

import enum
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal, NotRequired, Union, get_args, get_origin

_WRAPPERS = (Annotated, NotRequired)


@dataclass(frozen=True)
class Key:
    """One key of a record: its name, what it holds, its type without the meaning."""

    name: str
    meaning: str
    required: bool
    kind: Any


@cache
def keys_of(shape: type) -> tuple[Key, ...]:
    """The keys ``shape`` (a TypedDict) declares, in declaration order."""
    hints = typing.get_type_hints(shape, include_extras=True)
    out = []
    for name, hint in hints.items():
        # Python 3.11 cannot see NotRequired in postponed annotations
        # (__required_keys__ counts every key), so the hint itself decides.
        kind, meaning, required = hint, "", True
        while get_origin(kind) in _WRAPPERS:
            if get_origin(kind) is Annotated:
                meaning = str(kind.__metadata__[0])
            else:
                required = False
            kind = get_args(kind)[0]
        out.append(Key(name, meaning, required, kind))
    return tuple(out)


def nested(kind: Any) -> type | None:
    """The TypedDict inside ``kind`` (``X``, ``X | None``, ``list[X]``, ``dict[str, X]``)."""
    if typing.is_typeddict(kind):
        return typing.cast(type, kind)
    for arg in get_args(kind):
        inner = nested(arg)
        if inner is not None:
            return inner
    return None


@dataclass(frozen=True)
class Declared:
    """One kind of record: its shape, which commands print it, and what it says."""

    shape: type
    commands: tuple[str, ...]
    about: str

    @property
    def name(self) -> str:
        (event,) = (key for key in keys_of(self.shape) if key.name == "event")
        (name,) = get_args(event.kind)
        return str(name)

    @property
    def keys(self) -> tuple[Key, ...]:
        return tuple(key for key in keys_of(self.shape) if key.name != "event")


_JSON_TYPES: dict[Any, tuple[type, ...]] = {float: (int, float), type(None): (type(None),)}


def _fits(value: Any, kind: Any) -> bool:
    """Whether a JSON value fits ``kind`` (nested records are checked by :func:`problems`)."""
    origin = get_origin(kind)
    if kind is Any or kind is object:
        return True
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in get_args(kind))
    if origin is Literal:
        return value in get_args(kind)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return value in {member.value for member in kind}
    if typing.is_typeddict(kind):
        return isinstance(value, dict)
    if origin is not None:
        kind = origin
    if isinstance(value, bool) and kind is not bool:
        return False  # a JSON true is not a number
    return isinstance(value, _JSON_TYPES.get(kind, (kind,)))


def _holds_records(kind: Any) -> bool:
    """Whether ``kind`` is ``dict[str, Record]`` (or that or null), not a record itself."""
    if get_origin(kind) is dict:
        return True
    return any(get_origin(arg) is dict for arg in get_args(kind))


def problems(record: Any, shape: type, where: str) -> list[str]:
    """Every way ``record`` departs from ``shape`` (empty when it matches)."""
    if not isinstance(record, dict):
        return [f"{where} is not an object"]
    declared = {key.name: key for key in keys_of(shape)}
    found = [
        f"{where} lacks {key.name!r}"
        for key in declared.values()
        if key.required and key.name not in record
    ]
    found += [f"{where} has undeclared {name!r}" for name in record if name not in declared]
    for name, value in record.items():
        key = declared.get(name)
        if key is None:
            continue
        if not _fits(value, key.kind):
            found.append(f"{where}.{name} is {type(value).__name__} {value!r}, not {key.kind}")
            continue
        inner = nested(key.kind)
        if inner is None or value is None:
            continue
        if isinstance(value, list):
            for i, item in enumerate(value):
                found += problems(item, inner, f"{where}.{name}[{i}]")
        elif _holds_records(key.kind):
            for sub, item in value.items():
                found += problems(item, inner, f"{where}.{name}.{sub}")
        else:
            found += problems(value, inner, f"{where}.{name}")
    return found
