"""Every socket option vsockctl knows on vsock: its level, number, C width and notation.

CPython passes every ``setsockopt`` value on an AF_VSOCK socket as 8 bytes and
reads every ``getsockopt`` as 8 bytes, so each option here carries its real
width (``u64``, ``int``, ``struct timeval``) for :mod:`vsockctl.vsock.sockopt_apply`,
which sets them through libc in the order the kernel needs (the buffer limits
before the size) and reads back what the kernel made of each. Values are parsed
here from the command line's ``NAME=VALUE`` and shown back in the same notation.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from enum import Enum
from typing import overload

from vsockctl.units import UnitError, format_size, parse_duration, parse_size, whole_number
from vsockctl.vsock.constants import (
    AF_VSOCK,
    DEFAULT_BUFFER_MAX_SIZE,
    DEFAULT_BUFFER_MIN_SIZE,
    DEFAULT_BUFFER_SIZE,
    SO_VM_SOCKETS_BUFFER_MAX_SIZE,
    SO_VM_SOCKETS_BUFFER_MIN_SIZE,
    SO_VM_SOCKETS_BUFFER_SIZE,
    SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW,
    SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD,
    SO_VM_SOCKETS_NONBLOCK_TXRX,
    SO_VM_SOCKETS_PEER_HOST_VM_ID,
    SO_VM_SOCKETS_TRUSTED,
    SO_ZEROCOPY,
)

# On 64-bit Linux the plain SO_RCVTIMEO/SO_SNDTIMEO are the _OLD numbers (20/21),
# which take a struct timeval of two longs.
SO_RCVTIMEO = getattr(socket, "SO_RCVTIMEO", 20)
SO_SNDTIMEO = getattr(socket, "SO_SNDTIMEO", 21)

Value = int | float


class CType(Enum):
    """The C type of an option's value, with its struct layout."""

    U64 = ("u64", "=Q")
    INT = ("int", "=i")
    TIMEVAL = ("struct timeval", "@ll")
    TIMEVAL64 = ("struct __kernel_sock_timeval", "=qq")

    def __init__(self, label: str, layout: str) -> None:
        self.label = label
        self.layout = struct.Struct(layout)

    @property
    def width(self) -> int:
        return self.layout.size

    def pack(self, value: Value) -> bytes:
        if self in (CType.TIMEVAL, CType.TIMEVAL64):
            micros = round(value * 1_000_000)
            return self.layout.pack(micros // 1_000_000, micros % 1_000_000)
        return self.layout.pack(int(value))

    def unpack(self, raw: bytes) -> Value:
        if self in (CType.TIMEVAL, CType.TIMEVAL64):
            seconds, micros = self.layout.unpack(raw)
            return float(seconds + micros / 1_000_000)
        value: int = self.layout.unpack(raw)[0]
        return value


class Notation(Enum):
    """How a value is written on the command line."""

    SIZE = "size"
    DURATION = "duration"
    BOOL = "bool"
    INT = "int"


@dataclass(frozen=True)
class SockOpt:
    """One socket option: where it lives, its width, its names and its default."""

    name: str  # the short form, as vsockctl prints it
    linux: str | None
    vmci: str | None
    level: int
    number: int
    ctype: CType
    notation: Notation
    default: str
    summary: str
    limits: bool = False  # a buffer limit: set before the buffer size
    linux_errno: int | None = None  # what Linux answers for an option it does not handle

    @property
    def level_name(self) -> str:
        return "AF_VSOCK" if self.level == AF_VSOCK else "SOL_SOCKET"

    @property
    def names(self) -> tuple[str, ...]:
        """Every spelling that selects this option, normalised."""
        spelled = [self.name, self.linux, self.vmci]
        return tuple(normalise(n) for n in spelled if n)


def normalise(name: str) -> str:
    """``SO_VMCI_BUFFER_SIZE`` and ``vmci-buffer-size`` both become ``vmci-buffer-size``."""
    text = name.strip().lower().replace("_", "-")
    text = text.removeprefix("so-")
    return text.removeprefix("vm-sockets-")


_VSOCK = AF_VSOCK
_SOCKET = socket.SOL_SOCKET

OPTIONS: tuple[SockOpt, ...] = (
    SockOpt(
        "buffer-size",
        "SO_VM_SOCKETS_BUFFER_SIZE",
        "SO_VMCI_BUFFER_SIZE",
        _VSOCK,
        SO_VM_SOCKETS_BUFFER_SIZE,
        CType.U64,
        Notation.SIZE,
        format_size(DEFAULT_BUFFER_SIZE),
        "vsock buffer (receive window) size; clamped into [buffer-min-size, buffer-max-size]",
    ),
    SockOpt(
        "buffer-min-size",
        "SO_VM_SOCKETS_BUFFER_MIN_SIZE",
        "SO_VMCI_BUFFER_MIN_SIZE",
        _VSOCK,
        SO_VM_SOCKETS_BUFFER_MIN_SIZE,
        CType.U64,
        Notation.SIZE,
        str(DEFAULT_BUFFER_MIN_SIZE),
        "lower limit of buffer-size",
        limits=True,
    ),
    SockOpt(
        "buffer-max-size",
        "SO_VM_SOCKETS_BUFFER_MAX_SIZE",
        "SO_VMCI_BUFFER_MAX_SIZE",
        _VSOCK,
        SO_VM_SOCKETS_BUFFER_MAX_SIZE,
        CType.U64,
        Notation.SIZE,
        format_size(DEFAULT_BUFFER_MAX_SIZE),
        "upper limit of buffer-size: raise it before buffer-size",
        limits=True,
    ),
    SockOpt(
        "peer-host-vm-id",
        "SO_VM_SOCKETS_PEER_HOST_VM_ID",
        "SO_VMCI_PEER_HOST_VM_ID",
        _VSOCK,
        SO_VM_SOCKETS_PEER_HOST_VM_ID,
        CType.INT,
        Notation.INT,
        "-",
        "VMware: the peer's host VM id (Linux: ENOPROTOOPT)",
        linux_errno=errno.ENOPROTOOPT,
    ),
    SockOpt(
        "trusted",
        "SO_VM_SOCKETS_TRUSTED",
        "SO_VMCI_TRUSTED",
        _VSOCK,
        SO_VM_SOCKETS_TRUSTED,
        CType.INT,
        Notation.BOOL,
        "-",
        "VMware: whether the peer is trusted (Linux: ENOPROTOOPT)",
        linux_errno=errno.ENOPROTOOPT,
    ),
    SockOpt(
        "connect-timeout",
        "SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD",
        "SO_VMCI_CONNECT_TIMEOUT",
        _VSOCK,
        SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD,
        CType.TIMEVAL,
        Notation.DURATION,
        "2s",
        "how long connect waits for the peer (the plain SO_VM_SOCKETS_CONNECT_TIMEOUT)",
    ),
    SockOpt(
        "nonblock-txrx",
        "SO_VM_SOCKETS_NONBLOCK_TXRX",
        None,
        _VSOCK,
        SO_VM_SOCKETS_NONBLOCK_TXRX,
        CType.INT,
        Notation.BOOL,
        "-",
        "VMware: non-blocking send/receive (Linux: ENOPROTOOPT)",
        linux_errno=errno.ENOPROTOOPT,
    ),
    SockOpt(
        "connect-timeout-new",
        "SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW",
        None,
        _VSOCK,
        SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW,
        CType.TIMEVAL64,
        Notation.DURATION,
        "2s",
        "the connect timeout with a 64-bit timeval (the y2038 form; Linux 5.1+)",
    ),
    SockOpt(
        "sndbuf",
        "SO_SNDBUF",
        None,
        _SOCKET,
        socket.SO_SNDBUF,
        CType.INT,
        Notation.SIZE,
        "-",
        "socket send buffer (the kernel doubles what is set; vsock mostly uses buffer-size)",
    ),
    SockOpt(
        "rcvbuf",
        "SO_RCVBUF",
        None,
        _SOCKET,
        socket.SO_RCVBUF,
        CType.INT,
        Notation.SIZE,
        "-",
        "socket receive buffer (the kernel doubles what is set; vsock uses buffer-size)",
    ),
    SockOpt(
        "rcvlowat",
        "SO_RCVLOWAT",
        None,
        _SOCKET,
        socket.SO_RCVLOWAT,
        CType.INT,
        Notation.SIZE,
        "1",
        "bytes a receive waits for before returning; above the buffer size: EINVAL",
    ),
    SockOpt(
        "rcvtimeo",
        "SO_RCVTIMEO",
        None,
        _SOCKET,
        SO_RCVTIMEO,
        CType.TIMEVAL,
        Notation.DURATION,
        "0 (none)",
        "receive timeout",
    ),
    SockOpt(
        "sndtimeo",
        "SO_SNDTIMEO",
        None,
        _SOCKET,
        SO_SNDTIMEO,
        CType.TIMEVAL,
        Notation.DURATION,
        "0 (none)",
        "send timeout",
    ),
    SockOpt(
        "zerocopy",
        "SO_ZEROCOPY",
        None,
        _SOCKET,
        SO_ZEROCOPY,
        CType.INT,
        Notation.BOOL,
        "0",
        "allow MSG_ZEROCOPY sends (virtio, vhost and loopback from Linux 6.7)",
    ),
)

_BY_NAME = {name: opt for opt in OPTIONS for name in opt.names}


class SockOptError(ValueError):
    """An option name or value that vsockctl cannot use; the message says what is accepted."""


def lookup(name: str) -> SockOpt:
    """The option called ``name`` (any known spelling, case-insensitive)."""
    opt = _BY_NAME.get(normalise(name))
    if opt is None:
        known = ", ".join(opt.name for opt in OPTIONS)
        raise SockOptError(f"unknown socket option {name!r}; known: {known}")
    return opt


_TRUE = {"1", "on", "true", "yes"}
_FALSE = {"0", "off", "false", "no"}


def parse_value(opt: SockOpt, text: str) -> Value:
    """The value of ``opt`` written as ``text`` (sizes take suffixes, durations units)."""
    try:
        if opt.notation is Notation.SIZE:
            value: Value = parse_size(text)
        elif opt.notation is Notation.DURATION:
            value = parse_duration(text)
        elif opt.notation is Notation.INT:
            value = whole_number(text)
        elif text.strip().lower() in _TRUE | _FALSE:
            value = int(text.strip().lower() in _TRUE)
        else:
            raise SockOptError(f"{opt.name} takes on or off (1/0, true/false), not {text!r}")
    except SockOptError:
        raise
    except UnitError as exc:
        raise SockOptError(f"{opt.name}: {exc}") from exc
    except ValueError as exc:
        raise SockOptError(f"{opt.name} takes a whole number, not {text!r}") from exc
    limit = 1 << (8 * opt.ctype.width - (0 if opt.ctype is CType.U64 else 1))
    if opt.notation in (Notation.SIZE, Notation.INT) and not -limit <= value < limit:
        raise SockOptError(f"{opt.name}={text} does not fit its C type ({opt.ctype.label})")
    return value


@dataclass(frozen=True)
class Setting:
    """A requested ``NAME=VALUE``."""

    option: SockOpt
    value: Value
    text: str

    def __str__(self) -> str:
        return f"{self.option.name}={self.text}"


def parse_setting(text: str) -> Setting:
    """``NAME=VALUE`` as on the command line."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise SockOptError(f"expected NAME=VALUE (for example buffer-size=1M), not {text!r}")
    opt = lookup(name)
    return Setting(opt, parse_value(opt, value.strip()), value.strip())


def buffer_settings(size: int) -> tuple[Setting, Setting]:
    """A vsock buffer of ``size`` bytes: the limit, then the size (set in that order)."""
    return (
        Setting(lookup("buffer-max-size"), size, format_size(size)),
        Setting(lookup("buffer-size"), size, format_size(size)),
    )


@overload
def json_value(opt: SockOpt, value: Value) -> int: ...
@overload
def json_value(opt: SockOpt, value: Value | None) -> int | None: ...
def json_value(opt: SockOpt, value: Value | None) -> int | None:
    """``value`` for JSON: a whole number; durations in ns, as every duration vsockctl prints."""
    if value is None:
        return None
    if opt.notation is Notation.DURATION:
        return round(value * 1_000_000_000)
    return int(value)


def format_value(opt: SockOpt, value: Value) -> str:
    """``value`` as a person reads it: sizes exact with a suffix, durations in seconds."""
    if opt.notation is Notation.DURATION:  # whole microseconds (a timeval), never an exponent
        return f"{float(value):.6f}".rstrip("0").rstrip(".") + "s"
    if opt.notation is Notation.BOOL:
        return "on" if value else "off"
    if opt.notation is Notation.INT:
        return str(value)
    size = int(value)
    short = format_size(size)
    return str(size) if short == str(size) else f"{size} ({short})"
