"""Sizes (``64K``, ``1.5M``, ``1GiB``) and durations (``500ms``, ``2s``, ``1m``).

Size suffixes are binary: K = 1024, M = 1024², G = 1024³, T = 1024⁴, as in
iperf and dd; ``KiB``/``KB``/``k`` are all the same K.
"""

from __future__ import annotations

import re

SIZE_FORMS = "a number of bytes with an optional K, M, G or T suffix (for example 64K, 1.5M, 1G)"
DURATION_FORMS = "seconds, or a number with ms, s, m or h (for example 500ms, 2s, 1.5m)"

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# ASCII digits only: Python's own int() also takes '+3', '1_0' and '٣', which no one means.
_SIZE_RE = re.compile(
    r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE | re.ASCII
)
_DURATION_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "us": 0.000001, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(
    r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|us|s|m|h)?\s*$", re.IGNORECASE | re.ASCII
)
_WHOLE_RE = re.compile(r"-?(?:0x[0-9a-f]+|[0-9]+)", re.IGNORECASE | re.ASCII)


class UnitError(ValueError):
    """Text that is not a size or duration; the message names the accepted forms."""


def whole_number(text: str) -> int:
    """A whole number in ASCII decimal or ``0x`` hex, with an optional minus: nothing
    else Python's int() would take. Raises ValueError."""
    stripped = text.strip()
    if not _WHOLE_RE.fullmatch(stripped):
        raise ValueError(f"{text!r} is not a whole number")
    return int(stripped, 0) if "x" in stripped.lower() else int(stripped, 10)


def parse_size(text: str) -> int:
    """Bytes from ``text``; fractions must come to a whole number of bytes."""
    match = _SIZE_RE.match(text)
    if not match:
        raise UnitError(f"size {text!r} is not understood; expected {SIZE_FORMS}")
    number, unit = match.groups()
    scale = _SIZE_UNITS[unit.lower()]
    if "." in number:
        whole, _, frac = number.partition(".")
        numerator = int(whole or "0") * 10 ** len(frac) + int(frac)
        value: int
        value, rest = divmod(numerator * scale, 10 ** len(frac))
        if rest:
            raise UnitError(f"size {text!r} is not a whole number of bytes")
        return value
    return int(number) * scale


def parse_duration(text: str) -> float:
    """Seconds from ``text``."""
    match = _DURATION_RE.match(text)
    if not match:
        raise UnitError(f"duration {text!r} is not understood; expected {DURATION_FORMS}")
    number, unit = match.groups()
    return float(number) * _DURATION_UNITS[(unit or "").lower()]


def format_size(size: int) -> str:
    """The shortest exact text for ``size`` that :func:`parse_size` reads back."""
    for suffix, scale in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size and size % scale == 0:
            return f"{size // scale}{suffix}"
    return str(size)
