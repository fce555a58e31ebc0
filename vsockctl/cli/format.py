"""Numbers for people: binary sizes, rates and durations (the core stores bytes and ns)."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(n: float) -> str:
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_rate(bytes_per_second: float) -> str:
    """``123.4 MiB/s (1.04 Gbit/s)``: bytes for files, bits for links."""
    return f"{human_bytes(bytes_per_second)}/s ({bytes_per_second * 8 / 1e9:.2f} Gbit/s)"


def human_seconds(ns: int) -> str:
    seconds = ns / 1e9
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def escape(text: str) -> str:
    """``text`` with rich markup made literal (rich reads ``\\[`` as a plain ``[``)."""
    return text.replace("[", "\\[")


def plural(count: int, noun: str) -> str:
    """``1 connection``, ``2 connections``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
