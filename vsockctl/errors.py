"""Errors that keep their facts, and what each errno means on vsock.

Every failing socket operation in the core raises :class:`VsockError`, which is
an :class:`OSError` carrying the errno, the operation (``connect``, ``bind``
...) and the vsock address. :func:`explain` turns an errno into the vsock
meaning and a hint worth printing.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # an annotation only: the socket layer builds on this module
    from vsockctl.vsock.address import Endpoint


@dataclass(frozen=True)
class ErrnoMeaning:
    """What an errno usually means on vsock, and what to try."""

    name: str
    cause: str
    hint: str | None = None


ERRNO_MEANINGS: dict[int, ErrnoMeaning] = {
    errno.ECONNRESET: ErrnoMeaning(
        "ECONNRESET",
        "nothing listens on that CID:port (the peer answered with a reset)",
        "is the listener running, on this port, with this socket type?",
    ),
    errno.ECONNREFUSED: ErrnoMeaning(
        "ECONNREFUSED",
        "the peer refused the connection",
        "is the listener running, on this port, with this socket type?",
    ),
    errno.ETIMEDOUT: ErrnoMeaning(
        "ETIMEDOUT",
        "no answer within the connect timeout",
        "wrong CID, VM paused, or the transport drops packets; try a longer --timeout",
    ),
    errno.ENODEV: ErrnoMeaning(
        "ENODEV",
        "no transport for that route, no guest with that CID, or datagrams without VMCI",
        "check which transports are loaded ('vsockctl info') and that the CID is right",
    ),
    errno.ENETUNREACH: ErrnoMeaning(
        "ENETUNREACH",
        "the transport refused the destination",
        "check the CID; 'vsockctl info' shows which transports are loaded",
    ),
    errno.EADDRNOTAVAIL: ErrnoMeaning(
        "EADDRNOTAVAIL",
        "the CID to bind to is not a local CID",
        "bind to 'any' (the default) or to the CID 'vsockctl info' reports",
    ),
    errno.EADDRINUSE: ErrnoMeaning(
        "EADDRINUSE",
        "the port is already bound",
        "choose another port, or see who holds it with 'vsockctl ls'",
    ),
    errno.EACCES: ErrnoMeaning(
        "EACCES",
        "ports below 1024 need CAP_NET_BIND_SERVICE",
        "use a port of 1024 or more, or run with that capability",
    ),
    errno.ESOCKTNOSUPPORT: ErrnoMeaning(
        "ESOCKTNOSUPPORT",
        "this socket type is not offered by the transport",
        "use --type stream",
    ),
    errno.EMSGSIZE: ErrnoMeaning(
        "EMSGSIZE",
        "the message is larger than the vsock buffer",
        "raise the buffer size (buffer-max-size, then buffer-size)",
    ),
    errno.EPIPE: ErrnoMeaning("EPIPE", "the peer closed the connection"),
    errno.ENOTCONN: ErrnoMeaning("ENOTCONN", "the connection is shut down or was never made"),
    errno.EINVAL: ErrnoMeaning(
        "EINVAL",
        "invalid argument: a wrong option width, connect on a listening socket, or a double bind",
    ),
    errno.EAFNOSUPPORT: ErrnoMeaning(
        "EAFNOSUPPORT",
        "this kernel has no vsock (AF_VSOCK) at all",
        "'modprobe vsock', or use a kernel built with CONFIG_VSOCKETS",
    ),
    errno.ENOPROTOOPT: ErrnoMeaning(
        "ENOPROTOOPT",
        "this kernel does not handle that socket option",
    ),
    errno.ERANGE: ErrnoMeaning("ERANGE", "the value is out of the range the kernel accepts"),
    errno.EOPNOTSUPP: ErrnoMeaning(
        "EOPNOTSUPP",
        "the operation is not supported on this socket or transport",
    ),
}


class Operation(StrEnum):
    """What vsockctl was doing when the kernel said no."""

    SOCKET = "socket"
    BIND = "bind"
    LISTEN = "listen"
    ACCEPT = "accept"
    CONNECT = "connect"
    PROBE = "probe"
    HANDSHAKE = "handshake"  # hybrid vsock's CONNECT <port> / OK
    RESOLVE = "resolve"
    SEND = "send"
    RECV = "recv"
    THROUGHPUT = "throughput"
    GETSOCKOPT = "getsockopt"
    SETSOCKOPT = "setsockopt"
    SOCK_DIAG = "sock_diag"

    @property
    def mid_transfer(self) -> bool:
        """An operation of a connection that was made: its errors are the peer going away."""
        return self in (Operation.SEND, Operation.RECV, Operation.THROUGHPUT)

    @property
    def connecting(self) -> bool:
        """Reaching a peer: a reset here means nobody listens."""
        return self in (Operation.CONNECT, Operation.PROBE, Operation.HANDSHAKE)


# Where an operation gives an errno a meaning of its own.
OPERATION_MEANINGS: dict[tuple[Operation, int], ErrnoMeaning] = {
    (Operation.ACCEPT, errno.ETIMEDOUT): ErrnoMeaning(
        "ETIMEDOUT",
        "no peer connected within the timeout",
        "is the sender pointed at this CID and port? try a longer --timeout",
    ),
    **{
        (operation, err): ErrnoMeaning(
            errno.errorcode[err],
            "the peer went away in the middle (it closed, crashed or was reset)",
            "see the peer's own output; the stats above say what got through",
        )
        for operation in Operation
        if operation.mid_transfer
        for err in (errno.ECONNRESET, errno.EPIPE)
    },
    # The route existed when the connection was made: now the CID is gone.
    **{
        (operation, errno.ENODEV): ErrnoMeaning(
            "ENODEV",
            "the peer's CID went away in the middle (its VM was powered off, or its vsock "
            "device removed)",
            "see whether the VM still runs; the stats above say what got through",
        )
        for operation in Operation
        if operation.mid_transfer
    },
    (Operation.SETSOCKOPT, errno.EINVAL): ErrnoMeaning(
        "EINVAL",
        "the kernel refused this value for this option (wrong width, or out of what it takes, "
        "such as SO_RCVLOWAT above the buffer)",
        "'vsockctl sockopt list' shows each option's C type",
    ),
    (Operation.SETSOCKOPT, errno.ENOPROTOOPT): ErrnoMeaning(
        "ENOPROTOOPT",
        "this kernel does not handle that option on this socket type",
        "'vsockctl sockopt list' shows which options this kernel handles",
    ),
    (Operation.GETSOCKOPT, errno.ENOPROTOOPT): ErrnoMeaning(
        "ENOPROTOOPT",
        "this kernel does not handle that option on this socket type",
        "'vsockctl sockopt list' shows which options this kernel handles",
    ),
}


def explain(err: int, operation: Operation | None = None) -> ErrnoMeaning:
    """The vsock meaning of ``err`` (in ``operation``); unknown errnos fall back to strerror."""
    known = (operation is not None and OPERATION_MEANINGS.get((operation, err))) or (
        ERRNO_MEANINGS.get(err)
    )
    if known is not None:
        return known
    return ErrnoMeaning(errno.errorcode.get(err, f"errno {err}"), os.strerror(err))


class VsockError(OSError):
    """A vsock operation failed: errno, operation (and the option it set or read) and
    address are kept."""

    def __init__(
        self,
        err: int,
        operation: Operation,
        address: Endpoint | None = None,
        detail: str | None = None,
        *,
        target: str | None = None,
        meaning: ErrnoMeaning | None = None,
        option: str | None = None,
    ) -> None:
        super().__init__(err, detail or os.strerror(err))
        self.operation = operation
        self.option = option
        self.address = address
        self.target = target  # what was addressed when it is not a CID:port (a Unix socket)
        self._meaning = meaning  # where the errno's vsock meaning does not fit (TCP, Unix)

    @property
    def where(self) -> str | None:
        """The address or target, as text."""
        return str(self.address) if self.address is not None else self.target

    @property
    def doing(self) -> str:
        """The operation as words: ``connect``, ``setsockopt buffer-size``."""
        return f"{self.operation} {self.option}" if self.option else str(self.operation)

    @classmethod
    def wrap(
        cls,
        exc: OSError,
        operation: Operation,
        address: Endpoint | None = None,
        *,
        option: str | None = None,
    ) -> VsockError:
        """Re-raise-friendly copy of ``exc`` with the operation and address."""
        if isinstance(exc, VsockError):
            return exc
        if exc.errno is None:  # socket.timeout and friends carry no errno
            return cls(errno.ETIMEDOUT, operation, address, option=option)
        return cls(exc.errno, operation, address, exc.strerror, option=option)

    @property
    def meaning(self) -> ErrnoMeaning:
        assert self.errno is not None  # __init__ always sets it
        return self._meaning or explain(self.errno, self.operation)

    def __str__(self) -> str:
        where = f" {self.where}" if self.where is not None else ""
        return f"{self.doing}{where}: {self.strerror} ({self.meaning.name})"


class LocalIOError(OSError):
    """Reading or writing a local file or stream failed (a full disk, a closed pipe)."""

    def __init__(self, err: int, operation: str, name: str, detail: str | None = None) -> None:
        super().__init__(err, detail or os.strerror(err))
        self.operation = operation  # "reading" or "writing"
        self.name = name

    @classmethod
    def wrap(cls, exc: OSError, operation: str, name: str) -> LocalIOError:
        if isinstance(exc, LocalIOError):
            return exc
        return cls(exc.errno or errno.EIO, operation, name, exc.strerror)

    def __str__(self) -> str:
        return f"{self.operation} {self.name} failed: {self.strerror}"


class ProtocolError(Exception):
    """The peer spoke, but not the protocol expected (control exchange, hybrid vsock)."""


class DataMismatchError(Exception):
    """The data received differ from what was expected (size or checksum)."""


class VsockUnavailableError(Exception):
    """This machine cannot do what was asked with vsock (no AF_VSOCK, no transport, no diag)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint
