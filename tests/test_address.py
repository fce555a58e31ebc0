"""Address parsing: round trips, and a clear error for every malformed form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vsockctl.vsock.address import (
    AddressError,
    VsockAddress,
    format_cid,
    parse_address,
    parse_cid,
    parse_port,
    parse_probe_target,
)
from vsockctl.vsock.constants import U32_MAX, VMADDR_CID_ANY, VMADDR_PORT_ANY

u32 = st.integers(min_value=0, max_value=U32_MAX)


@given(cid=u32, port=u32)
def test_text_round_trip(cid: int, port: int) -> None:
    address = VsockAddress(cid, port)
    assert parse_address(str(address)) == address


@given(cid=u32, port=u32)
def test_hex_forms_parse_to_the_same_address(cid: int, port: int) -> None:
    assert parse_address(f"{cid:#x}:{port:#X}".replace("0X", "0x")) == VsockAddress(cid, port)


@given(cid=u32)
def test_bare_cid_takes_the_default_port(cid: int) -> None:
    assert parse_address(format_cid(cid), default_port=5000) == VsockAddress(cid, 5000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("any:any", VsockAddress(VMADDR_CID_ANY, VMADDR_PORT_ANY)),
        ("host:1024", VsockAddress(2, 1024)),
        ("LOCAL:5000", VsockAddress(1, 5000)),
        ("hypervisor:9", VsockAddress(0, 9)),
        (" 3 : 5000 ", VsockAddress(3, 5000)),
        ("4294967295:1", VsockAddress(VMADDR_CID_ANY, 1)),
    ],
)
def test_named_and_spaced_forms(text: str, expected: VsockAddress) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("3:", "no port after ':'"),
        (":5000", "no CID before ':'"),
        ("-1:5000", "use 'any' for VMADDR_CID_ANY"),
        ("4294967296:1", "larger than 4294967295"),
        ("host:abc", "port 'abc' is not a number"),
        ("3:5000:1", "more than one ':'"),
        ("3", "has no port"),
        ("guest:1", "CID 'guest' is not a number"),
        ("3:-5", "negative"),
        ("", "has no port"),
    ],
)
def test_malformed_addresses_say_why(text: str, fragment: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(text)
    assert fragment in str(info.value)


@given(st.text(max_size=20))
def test_any_text_parses_or_raises_address_error(text: str) -> None:
    try:
        address = parse_address(text, default_port=1)
    except AddressError as exc:
        assert str(exc)
    else:
        assert 0 <= address.cid <= U32_MAX and 0 <= address.port <= U32_MAX


@given(st.integers().filter(lambda n: n < 0 or n > U32_MAX))
def test_out_of_range_numbers_are_refused(value: int) -> None:
    with pytest.raises(AddressError):
        parse_cid(str(value))
    with pytest.raises(AddressError):
        parse_port(str(value))
    with pytest.raises(AddressError):
        VsockAddress(value, 1)


def test_port_any_and_cid_any_print_as_names() -> None:
    assert str(VsockAddress(VMADDR_CID_ANY, VMADDR_PORT_ANY)) == "any:any"
    assert parse_port("ANY") == VMADDR_PORT_ANY


def test_flags_are_kept_and_checked() -> None:
    assert VsockAddress(2, 1, flags=1).to_host
    assert not VsockAddress(2, 1).to_host
    with pytest.raises(AddressError):
        VsockAddress(2, 1, flags=256)


def test_probe_targets_take_cid_lists_and_ranges() -> None:
    assert parse_probe_target("3:22") == ([3], [22])
    assert parse_probe_target("host:22") == ([2], [22])
    assert parse_probe_target("3-5,9:22,1024-1025") == ([3, 4, 5, 9], [22, 1024, 1025])
    with pytest.raises(AddressError, match="CID range '9-3' runs backwards"):
        parse_probe_target("9-3:22")
    with pytest.raises(AddressError, match="CID"):
        parse_probe_target("3-x:22")
