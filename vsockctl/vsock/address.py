"""vsock addresses: a value type and the parser for what people type.

Accepted forms::

    3:5000          CID and port
    3               a bare CID (when the command supplies the port)
    host:1024       named CIDs: any, hypervisor, local, host
    any:any         any CID, any port (binding)
    0x10:5000       CIDs and ports may be written in hex
"""

from __future__ import annotations

from dataclasses import dataclass

from vsockctl.units import whole_number
from vsockctl.vsock.constants import (
    CID_NAMES,
    U32_MAX,
    VMADDR_CID_ANY,
    VMADDR_FLAG_TO_HOST,
    VMADDR_PORT_ANY,
)

CID_FORMS = "a number from 0 to 4294967295, or any, hypervisor, local, host"
PORT_FORMS = "a number from 0 to 4294967295, or any"
ADDRESS_FORMS = "CID:PORT (for example 3:5000 or host:1024)"


class AddressError(ValueError):
    """Text that is not a vsock CID, port or address; the message says why."""


@dataclass(frozen=True, order=True)
class VsockAddress:
    """A vsock endpoint: context id, port and ``svm_flags``."""

    cid: int
    port: int
    flags: int = 0

    def __post_init__(self) -> None:
        for what, value in (("CID", self.cid), ("port", self.port)):
            if not 0 <= value <= U32_MAX:
                raise AddressError(f"{what} {value} is out of range (0 to {U32_MAX})")
        if not 0 <= self.flags <= 0xFF:
            raise AddressError(f"flags {self.flags:#x} do not fit in svm_flags (one byte)")

    @property
    def to_host(self) -> bool:
        return bool(self.flags & VMADDR_FLAG_TO_HOST)

    def sockaddr(self) -> tuple[int, int]:
        """The ``(cid, port)`` tuple Python's socket module takes (flags are not carried)."""
        return (self.cid, self.port)

    def __str__(self) -> str:
        return f"{format_cid(self.cid)}:{format_port(self.port)}"


@dataclass(frozen=True)
class UnixEndpoint:
    """A hybrid vsock end on the host: a VMM's Unix socket standing for vsock ``port``.

    The VMM does not say which guest CID is on the other side; ``cid`` is
    ``VMADDR_CID_ANY`` unless known.
    """

    path: str
    port: int
    cid: int = VMADDR_CID_ANY
    flags: int = 0

    def __str__(self) -> str:
        return f"unix:{self.path} port {self.port}"


Endpoint = VsockAddress | UnixEndpoint


def format_cid(cid: int) -> str:
    return "any" if cid == VMADDR_CID_ANY else str(cid)


def format_port(port: int) -> str:
    return "any" if port == VMADDR_PORT_ANY else str(port)


def _parse_u32(text: str, what: str, forms: str) -> int:
    stripped = text.strip()
    if not stripped:
        raise AddressError(f"missing {what}; expected {forms}")
    if stripped.startswith("-"):
        hint = " (use 'any' for VMADDR_CID_ANY)" if stripped == "-1" and what == "CID" else ""
        raise AddressError(f"{what} {text!r} is negative{hint}; expected {forms}")
    try:
        value = whole_number(stripped)
    except ValueError:
        raise AddressError(f"{what} {text!r} is not a number; expected {forms}") from None
    if value > U32_MAX:
        raise AddressError(f"{what} {text!r} is larger than {U32_MAX}; expected {forms}")
    return value


def parse_cid(text: str) -> int:
    """A CID from a number or a name (any, hypervisor, local, host)."""
    named = CID_NAMES.get(text.strip().lower())
    if named is not None:
        return named
    return _parse_u32(text, "CID", CID_FORMS)


def parse_port(text: str) -> int:
    """A port from a number or ``any``."""
    if text.strip().lower() == "any":
        return VMADDR_PORT_ANY
    return _parse_u32(text, "port", PORT_FORMS)


def parse_address(text: str, default_port: int | None = None, flags: int = 0) -> VsockAddress:
    """Parse ``CID:PORT``, or a bare ``CID`` when ``default_port`` is given."""
    if text.count(":") > 1:
        raise AddressError(f"address {text!r} has more than one ':'; expected {ADDRESS_FORMS}")
    cid_text, colon, port_text = text.partition(":")
    if colon:
        if not cid_text.strip():
            raise AddressError(f"address {text!r} has no CID before ':'; expected {ADDRESS_FORMS}")
        if not port_text.strip():
            raise AddressError(f"address {text!r} has no port after ':'; expected {ADDRESS_FORMS}")
        return VsockAddress(parse_cid(cid_text), parse_port(port_text), flags)
    if default_port is None:
        raise AddressError(f"address {text!r} has no port; expected {ADDRESS_FORMS}")
    return VsockAddress(parse_cid(cid_text), default_port, flags)


PORT_LIST_FORMS = "ports and ranges separated by commas (for example 22,1024,5000-5010)"
MAX_PORT_LIST = 65536


def parse_port_list(text: str) -> list[int]:
    """``1024,5000-5010`` as a sorted list of distinct ports."""
    return _parse_u32_list(text, "port", PORT_LIST_FORMS)


def parse_cid_list(text: str) -> list[int]:
    """``3-64`` or ``3,5,7-9`` (or one CID, named or not) as a sorted list of CIDs."""
    if "-" not in text and "," not in text:
        return [parse_cid(text)]
    return _parse_u32_list(text, "CID", "CIDs and ranges separated by commas (3-64)")


def _parse_u32_list(text: str, what: str, forms: str) -> list[int]:
    values: set[int] = set()
    for item in text.split(","):
        low_text, dash, high_text = item.partition("-")
        if not item.strip():
            raise AddressError(f"{what} list {text!r} has an empty item; expected {forms}")
        low = _parse_u32(low_text, what, forms)
        high = _parse_u32(high_text, what, forms) if dash else low
        if high < low:
            raise AddressError(f"{what} range {item.strip()!r} runs backwards")
        if len(values) + (high - low + 1) > MAX_PORT_LIST:
            raise AddressError(f"{what} list {text!r} names more than {MAX_PORT_LIST}")
        values.update(range(low, high + 1))
    return sorted(values)


def parse_probe_target(text: str) -> tuple[list[int], list[int]]:
    """``CIDS:PORTS`` for probing: a CID or CID list and range, and a port list."""
    cid_text, colon, ports_text = text.partition(":")
    if not colon or not cid_text.strip() or not ports_text.strip():
        raise AddressError(
            f"probe target {text!r} is not CID:PORTS; expected for example 3:22,1024,5000-5010"
        )
    return parse_cid_list(cid_text), parse_port_list(ports_text)
