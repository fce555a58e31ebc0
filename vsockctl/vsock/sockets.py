"""Opening, binding, listening on and connecting vsock sockets.

Every failure is raised as :class:`~vsockctl.errors.VsockError` with the
operation and address, so callers can explain it.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from collections.abc import Callable
from enum import Enum

from vsockctl.errors import Operation, VsockError, VsockUnavailableError
from vsockctl.vsock import _libc
from vsockctl.vsock.address import Endpoint, UnixEndpoint, VsockAddress
from vsockctl.vsock.constants import (
    AF_VSOCK,
    SO_VM_SOCKETS_CONNECT_TIMEOUT,
    VMADDR_CID_ANY,
    VMADDR_PORT_ANY,
)

SocketFactory = Callable[..., socket.socket]
# Opens a connected stream to an address some other way (hybrid vsock): address, timeout.
Opener = Callable[[VsockAddress, "float | None"], socket.socket]


class SocketType(Enum):
    """The vsock socket types, by the names the command line uses."""

    STREAM = "stream"
    SEQPACKET = "seqpacket"
    DGRAM = "dgram"

    @property
    def number(self) -> int:
        return {
            SocketType.STREAM: socket.SOCK_STREAM,
            SocketType.SEQPACKET: socket.SOCK_SEQPACKET,
            SocketType.DGRAM: socket.SOCK_DGRAM,
        }[self]

    @property
    def connected(self) -> bool:
        """Whether the type has connections (listen/accept/connect)."""
        return self is not SocketType.DGRAM

    @classmethod
    def from_number(cls, number: int) -> SocketType | None:
        for member in cls:
            if member.number == number:
                return member
        return None


def open_socket(
    sock_type: SocketType = SocketType.STREAM,
    factory: SocketFactory = socket.socket,
    *,
    blocking: bool = True,
) -> socket.socket:
    """A new, unbound vsock socket of ``sock_type`` (made non-blocking, without a
    system call of its own, unless ``blocking``)."""
    try:
        return factory(AF_VSOCK, sock_type.number | (0 if blocking else socket.SOCK_NONBLOCK))
    except OSError as exc:
        if sock_type is SocketType.DGRAM and exc.errno == errno.ENODEV:
            raise VsockUnavailableError(
                "no loaded transport has vsock datagrams (only VMware VMCI offers them)",
                "use --type stream, or --type seqpacket for message boundaries",
            ) from exc
        raise VsockError.wrap(exc, Operation.SOCKET) from exc


def set_connect_timeout(sock: socket.socket, seconds: float) -> None:
    """Set ``SO_VM_SOCKETS_CONNECT_TIMEOUT`` (a ``struct timeval``, set through libc)."""
    whole = int(seconds)
    micros = min(round((seconds - whole) * 1_000_000), 999_999)
    value = _libc.TIMEVAL.pack(whole, micros)
    try:
        _libc.setsockopt(sock.fileno(), AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, value)
    except OSError as exc:
        raise VsockError.wrap(exc, Operation.SETSOCKOPT, option="connect-timeout") from exc


def bind(sock: socket.socket, address: VsockAddress) -> None:
    """Bind ``sock`` to ``address`` (through libc when ``svm_flags`` are set)."""
    try:
        if address.flags:
            _libc.bind(sock.fileno(), _libc.pack_sockaddr_vm(*address.sockaddr(), address.flags))
        else:
            sock.bind(address.sockaddr())
    except OSError as exc:
        raise VsockError.wrap(exc, Operation.BIND, address) from exc


def local_address(sock: socket.socket) -> Endpoint:
    """Where ``sock`` is bound: a CID:port, or for hybrid vsock the Unix socket it stands for."""
    if sock.family == socket.AF_UNIX:
        return _unix_endpoint(sock.getsockname())
    cid, port = sock.getsockname()
    return VsockAddress(cid, port)


def _unix_endpoint(name: str | bytes) -> UnixEndpoint:
    """A hybrid listener's path ``PATH_PORT`` read back as its Unix socket and vsock port."""
    path = os.fsdecode(name) or "(unnamed)"
    stem, _, port = path.rpartition("_")
    if stem and port.isdigit():
        return UnixEndpoint(stem, int(port), VMADDR_CID_ANY)
    return UnixEndpoint(path, VMADDR_PORT_ANY)


def listen(
    address: VsockAddress,
    sock_type: SocketType = SocketType.STREAM,
    backlog: int = socket.SOMAXCONN,
    factory: SocketFactory = socket.socket,
) -> socket.socket:
    """A socket bound to ``address``, listening when the type has connections."""
    sock = open_socket(sock_type, factory)
    try:
        bind(sock, address)
        if sock_type.connected:
            try:
                sock.listen(backlog)
            except OSError as exc:
                raise VsockError.wrap(exc, Operation.LISTEN, address) from exc
    except BaseException:
        sock.close()
        raise
    return sock


SIGNAL_CHECK_MS = 500  # how long a blocking accept waits before Python looks at signals


def _wait_readable(server: socket.socket) -> None:
    """Wait for a blocking listener in slices, so Ctrl-C or SIGTERM ends the wait.

    A signal that arrives after Python last looked and before accept(2) starts
    does not interrupt accept(2): it would wait for the next client with the
    stop pending (seen under emulation). Between slices Python runs the
    handlers that are due. A listener with a timeout keeps its own.
    """
    if server.gettimeout() is not None:
        return
    poller = select.poll()
    poller.register(server, select.POLLIN)
    while not poller.poll(SIGNAL_CHECK_MS):
        pass


def accept(server: socket.socket) -> tuple[socket.socket, Endpoint]:
    """The next connection on a listening socket and its peer address.

    On a hybrid vsock listener (a Unix socket) the peer is a guest the VMM
    does not name: the listener's own endpoint stands for it.
    """
    try:
        _wait_readable(server)
        conn, peer = server.accept()
    except OSError as exc:
        if isinstance(exc, BlockingIOError):  # a timeout of 0: no client was waiting
            exc = TimeoutError()
        local = local_address(server)
        raise VsockError.wrap(
            exc, Operation.ACCEPT, local if isinstance(local, VsockAddress) else None
        ) from exc
    if server.family == socket.AF_UNIX:
        local = local_address(server)
        return conn, UnixEndpoint(
            local.path if isinstance(local, UnixEndpoint) else "?", local.port
        )
    cid, port = peer
    return conn, VsockAddress(cid, port)


def connect(
    address: VsockAddress,
    sock_type: SocketType = SocketType.STREAM,
    timeout: float | None = None,
    *,
    sock: socket.socket | None = None,
    factory: SocketFactory = socket.socket,
) -> socket.socket:
    """Connect to ``address`` and return the connected, blocking socket.

    ``timeout`` (seconds) is set as the kernel's vsock connect timeout, so the
    kernel does not give up at its 2-second default first, and is kept as an
    overall deadline too. ``sock`` lets a caller set options before connecting.
    """
    if sock is None:
        sock = open_socket(sock_type, factory)
    try:
        if timeout is not None:
            if timeout <= 0:
                raise VsockError(
                    errno.ETIMEDOUT, Operation.CONNECT, address, "the connect timeout has passed"
                )
            set_connect_timeout(sock, timeout)
        if address.flags:
            # Python's socket module cannot pass svm_flags: connect through libc,
            # blocking, bounded by the kernel's connect timeout set above.
            _libc.connect(sock.fileno(), _libc.pack_sockaddr_vm(*address.sockaddr(), address.flags))
        else:
            # Python's own deadline outlives the kernel's by a little, so the
            # kernel's ETIMEDOUT is what normally ends a slow connect.
            sock.settimeout(None if timeout is None else timeout + 0.5)
            sock.connect(address.sockaddr())
            sock.settimeout(None)
    except OSError as exc:
        sock.close()
        raise VsockError.wrap(exc, Operation.CONNECT, address) from exc
    except BaseException:
        sock.close()
        raise
    return sock


RETRYABLE_CONNECT_ERRNOS = frozenset({errno.ECONNRESET, errno.ECONNREFUSED, errno.ETIMEDOUT})


def connect_with_retry(
    address: VsockAddress,
    sock_type: SocketType = SocketType.STREAM,
    timeout: float | None = None,
    *,
    retries: int = 0,
    retry_delay: float = 1.0,
    factory: SocketFactory = socket.socket,
    sleep: Callable[[float], None] = time.sleep,
    opener: Opener | None = None,
) -> socket.socket:
    """:func:`connect` (or ``opener``), tried again up to ``retries`` times while nothing
    listens yet."""
    attempt = 0
    while True:
        try:
            if opener is not None:
                return opener(address, timeout)
            return connect(address, sock_type, timeout, factory=factory)
        except VsockError as exc:
            if exc.errno not in RETRYABLE_CONNECT_ERRNOS or attempt >= retries:
                raise
            attempt += 1
            sleep(retry_delay)
