"""The declaration of one kind of ``--json`` record (see :mod:`vsockctl.events`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Check = Callable[[dict[str, Any]], list[str]]


@dataclass(frozen=True)
class Event:
    """One kind of record: which commands print it, and its keys."""

    name: str
    commands: tuple[str, ...]
    about: str
    keys: dict[str, str]
    optional: dict[str, str] = field(default_factory=dict)
    deeper: Check | None = None  # checks of nested objects (throughput's summary)
