"""Sizes and durations: round trips and clear errors (property tests)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vsockctl.units import UnitError, format_size, parse_duration, parse_size


@given(st.integers(min_value=0, max_value=1 << 50))
def test_size_round_trip(size: int) -> None:
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("64K", 65536),
        ("64k", 65536),
        ("1M", 1 << 20),
        ("1.5M", 3 << 19),
        ("1G", 1 << 30),
        ("2GiB", 2 << 30),
        ("1T", 1 << 40),
        ("512 KiB", 512 << 10),
        ("100b", 100),
        (" 7 ", 7),
        (".5K", 512),
    ],
)
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["12Q", "", "K", "-1", "1.5", "0.3K", "1e6", "1KK", "ten"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(UnitError) as info:
        parse_size(text)
    assert repr(text) in str(info.value)


@given(st.text(max_size=12))
def test_any_text_is_a_size_or_a_unit_error(text: str) -> None:
    with contextlib.suppress(UnitError):
        assert parse_size(text) >= 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2", 2.0), ("2s", 2.0), ("500ms", 0.5), ("1.5m", 90.0), ("1h", 3600.0), ("250us", 0.00025)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "-1s", "2 days", "1x"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UnitError):
        parse_duration(text)
