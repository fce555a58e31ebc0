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
    annotation: Any


@cache
def keys_of(shape: type) -> tuple[Key, ...]:
    """The keys ``shape`` (a TypedDict) declares, in declaration order."""
    hints = typing.get_type_hints(shape, include_extras=True)
    out = []
    for name, hint in hints.items():
        # Python 3.11 cannot see NotRequired in postponed annotations
        # (__required_keys__ counts every key), so the hint itself decides.
        annotation, meaning, required = hint, "", True
        while get_origin(annotation) in _WRAPPERS:
            if get_origin(annotation) is Annotated:
                meaning = str(annotation.__metadata__[0])
            else:
                required = False
            annotation = get_args(annotation)[0]
        out.append(Key(name, meaning, required, annotation))
    return tuple(out)


def nested(annotation: Any) -> type | None:
    """The TypedDict inside ``annotation`` (``X``, ``X | None``, ``list[X]``, ``dict[str, X]``)."""
    if typing.is_typeddict(annotation):
        return typing.cast(type, annotation)
    for arg in get_args(annotation):
        inner = nested(arg)
        if inner is not None:
            return inner
    return None


@dataclass(frozen=True)
class Declared:
    """One annotation of record: its shape, which commands print it, and what it says."""

    shape: type
    commands: tuple[str, ...]
    about: str

    @property
    def name(self) -> str:
        (event,) = (key for key in keys_of(self.shape) if key.name == "event")
        (name,) = get_args(event.annotation)
        return str(name)

    @property
    def keys(self) -> tuple[Key, ...]:
        return tuple(key for key in keys_of(self.shape) if key.name != "event")


_JSON_TYPES: dict[Any, tuple[type, ...]] = {float: (int, float), type(None): (type(None),)}


def _fits(value: Any, annotation: Any) -> bool:
    """Whether a JSON value fits ``annotation`` (nested records are checked by :func:`problems`)."""
    origin = get_origin(annotation)
    if annotation is Any or annotation is object:
        return True
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in get_args(annotation))
    if origin is Literal:
        return value in get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value in {member.value for member in annotation}
    if typing.is_typeddict(annotation):
        return isinstance(value, dict)
    if origin is not None:
        annotation = origin
    if isinstance(value, bool) and annotation is not bool:
        return False  # a JSON true is not a number
    return isinstance(value, _JSON_TYPES.get(annotation, (annotation,)))


def _holds_records(annotation: Any) -> bool:
    """Whether ``annotation`` is ``dict[str, Record]`` (or that or null), not a record itself."""
    if get_origin(annotation) is dict:
        return True
    return any(get_origin(arg) is dict for arg in get_args(annotation))


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
        if not _fits(value, key.annotation):
            found.append(
                f"{where}.{name} is {type(value).__name__} {value!r}, not {key.annotation}"
            )
            continue
        inner = nested(key.annotation)
        if inner is None or value is None:
            continue
        if isinstance(value, list):
            for i, item in enumerate(value):
                found += problems(item, inner, f"{where}.{name}[{i}]")
        elif _holds_records(key.annotation):
            for sub, item in value.items():
                found += problems(item, inner, f"{where}.{name}.{sub}")
        else:
            found += problems(value, inner, f"{where}.{name}")
    return found
