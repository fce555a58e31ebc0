"""What ``forward`` listens on and connects to: TCP, a Unix socket, vsock or hybrid vsock.

Accepted forms::

    tcp:127.0.0.1:8080     TCP over IPv4 or IPv6 (tcp:[::1]:8080); a listener
                           binds exactly that host
    unix:/run/app.sock     a Unix stream socket (a listener never replaces a
                           file that is not a socket)
    vsock:3:8080, 3:8080   vsock CID and port, named CIDs as elsewhere
    uds:/run/fc.sock:8080  a guest port through a Firecracker / Cloud Hypervisor
                           hybrid vsock socket: connects with CONNECT 8080,
                           listens on /run/fc.sock_8080
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from vsockctl.errors import ErrnoMeaning, Operation, VsockError
from vsockctl.units import whole_number
from vsockctl.vsock.address import AddressError, VsockAddress, parse_address, parse_port
from vsockctl.vsock.constants import AF_VSOCK, VMADDR_CID_ANY, VMADDR_PORT_ANY
from vsockctl.vsock.hybrid import listener_path, unix_listener
from vsockctl.vsock.route import Route
from vsockctl.vsock.sockets import SocketFactory, SocketType, open_socket, set_connect_timeout

AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]
SIDE_FORMS = "tcp:HOST:PORT, unix:PATH, vsock:CID:PORT (or CID:PORT), or uds:PATH:PORT"
TCP_PORT_MAX = 65535


@dataclass(frozen=True)
class TcpSide:
    host: str  # as given, without brackets
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


@dataclass(frozen=True)
class UnixSide:
    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True)
class VsockSide:
    """vsock, or (``route.uds``) a guest port through a VMM's hybrid vsock socket."""

    route: Route

    def __str__(self) -> str:
        if self.route.uds is not None:
            return f"uds:{self.route.uds}:{self.route.port}"
        return f"vsock:{self.route.address}"


Side = TcpSide | UnixSide | VsockSide


def parse_side(text: str) -> Side:
    """The side ``text`` names; AddressError says what is wrong with it."""
    scheme, colon, rest = text.partition(":")
    if not colon:
        raise AddressError(f"{text!r} is not an address: use {SIDE_FORMS}")
    if scheme == "tcp":
        return _parse_tcp(text, rest)
    if scheme == "unix":
        if not rest:
            raise AddressError(f"{text!r} lacks the socket's path: unix:PATH")
        return UnixSide(rest)
    if scheme == "uds":
        path, colon, port = rest.rpartition(":")
        if not colon or not path:
            raise AddressError(f"{text!r} lacks the guest's port: uds:PATH:PORT")
        return VsockSide(Route.hybrid(path, parse_port(port)))
    if scheme == "vsock":
        return VsockSide(Route(parse_address(rest)))
    if scheme.isalpha() and scheme not in ("any", "host", "hypervisor", "local"):
        raise AddressError(f"unknown scheme {scheme!r} in {text!r}: use {SIDE_FORMS}")
    return VsockSide(Route(parse_address(text)))


def _parse_tcp(text: str, rest: str) -> TcpSide:
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or not tail.startswith(":"):
            raise AddressError(f"{text!r}: an IPv6 address goes as tcp:[ADDRESS]:PORT")
        port_text = tail[1:]
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon or not host:
            raise AddressError(f"{text!r} lacks a host or a port: tcp:HOST:PORT")
        if ":" in host:
            raise AddressError(f"{text!r}: an IPv6 address goes in brackets, tcp:[{host}]:PORT")
    try:
        port = whole_number(port_text)
    except ValueError:
        raise AddressError(f"{text!r}: the TCP port {port_text!r} is not a number") from None
    if not 0 <= port <= TCP_PORT_MAX:
        raise AddressError(f"{text!r}: the TCP port must be 0 (a listener: any) to {TCP_PORT_MAX}")
    return TcpSide(host, port)


def connect_side(side: Side, timeout: float | None, factory: SocketFactory) -> socket.socket:
    """A connected stream to ``side`` (vsock sockets come from ``factory``)."""
    if isinstance(side, VsockSide):
        return side.route.connect(SocketType.STREAM, timeout, factory=factory)
    if isinstance(side, UnixSide):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        return _connect(sock, side.path, timeout, side)
    last: OSError | None = None
    for family, kind, proto, _, address in _resolve(side, passive=False):
        sock = socket.socket(family, kind, proto)
        try:
            conn = _connect(sock, address, timeout, side)
        except VsockError as exc:
            last = exc
            continue
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn
    assert last is not None  # _resolve gives at least one address or raises
    raise last


class Started(NamedTuple):
    """A non-blocking connect: under way, or (``done``) ended at once, as a Unix
    socket's and sometimes a TCP loopback's do."""

    sock: socket.socket
    done: bool


def start_connect(side: Side, timeout: float | None, factory: SocketFactory) -> Started | None:
    """A non-blocking connect to ``side``: its socket is writable once it ends, and
    SO_ERROR says how. None where only the blocking :func:`connect_side` can reach
    ``side``: hybrid vsock (a handshake follows), ``VMADDR_FLAG_TO_HOST`` (libc's
    connect), a Unix socket whose backlog is full (EAGAIN there: the blocking
    connect waits for room), a host name with several addresses (tried in turn)."""
    if isinstance(side, VsockSide):
        route = side.route
        if route.uds is not None or route.address.flags:
            return None
        sock = open_socket(SocketType.STREAM, factory, blocking=False)
        address: Any = route.address.sockaddr()
        try:
            if timeout is not None:
                set_connect_timeout(sock, timeout)
        except BaseException:
            sock.close()
            raise
    elif isinstance(side, TcpSide):
        addresses = _resolve(side, passive=False)
        if len(addresses) != 1:
            return None
        family, kind, proto, _, address = addresses[0]
        sock = socket.socket(family, kind | socket.SOCK_NONBLOCK, proto)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        address = side.path
    err = sock.connect_ex(address)
    if err == errno.EAGAIN and sock.family == socket.AF_UNIX:
        sock.close()
        return None
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        raise connect_error(side, err)
    return Started(sock, err == 0)


# A vsock peer that does not answer is not there (vsock has no lost handshakes to
# retry); a TCP or Unix service can be live but slow to accept, and its kernel
# keeps trying (TCP resends a dropped SYN for about two minutes).
VSOCK_CONNECT_TIMEOUT = 5.0

# What a failed connect to a TCP or Unix target means: not the vsock meanings.
_SERVICE_MEANINGS = {
    errno.ETIMEDOUT: ErrnoMeaning(
        "ETIMEDOUT",
        "the service did not accept within the connect timeout",
        "is it up, and keeping up? raise --timeout, or leave it unset to wait as its kernel does",
    ),
    errno.ECONNREFUSED: ErrnoMeaning(
        "ECONNREFUSED", "nothing listens there", "is the service running at that address?"
    ),
    errno.ENOENT: ErrnoMeaning(
        "ENOENT", "there is no socket at that path", "is the service running, with that socket?"
    ),
}


def connect_timeout(side: Side, given: float | None) -> float | None:
    """How long to wait for ``side`` to accept: ``given``, else 5 s for vsock, else as
    long as the kernel keeps trying (None)."""
    if given is not None:
        return given
    return VSOCK_CONNECT_TIMEOUT if isinstance(side, VsockSide) else None


def connect_error(side: Side, err: int) -> VsockError:
    """A failed connect to ``side``, as :func:`connect_side` reports it."""
    if isinstance(side, VsockSide):
        return VsockError(err, Operation.CONNECT, side.route.shown)
    return VsockError(err, Operation.CONNECT, target=str(side), meaning=_SERVICE_MEANINGS.get(err))


def _connect(sock: socket.socket, address: Any, timeout: float | None, side: Side) -> socket.socket:
    try:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.settimeout(None)
    except OSError as exc:
        sock.close()
        err = errno.ETIMEDOUT if isinstance(exc, TimeoutError) else (exc.errno or errno.EIO)
        raise connect_error(side, err) from exc
    return sock


def _resolve(side: TcpSide, *, passive: bool) -> Sequence[AddrInfo]:
    try:
        return socket.getaddrinfo(
            side.host,
            side.port,
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE if passive else 0,
        )
    except socket.gaierror as exc:
        raise VsockError(
            errno.EADDRNOTAVAIL, Operation.RESOLVE, target=str(side), detail=str(exc)
        ) from exc


@contextlib.contextmanager
def listen_side(side: Side, backlog: int, factory: SocketFactory) -> Iterator[socket.socket]:
    """A listening stream socket on ``side``; a socket file it creates goes at exit."""
    if isinstance(side, VsockSide):
        with side.route.listen(SocketType.STREAM, backlog, factory) as sock:
            yield sock
        return
    if isinstance(side, UnixSide):
        with unix_listener(side.path, backlog) as sock:
            yield sock
        return
    family, kind, proto, _, address = _resolve(side, passive=True)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(backlog)
        except OSError as exc:
            raise VsockError(exc.errno or errno.EIO, Operation.LISTEN, target=str(side)) from exc
        yield sock


def bound_side(side: Side, sock: socket.socket) -> Side:
    """``side`` with the port the kernel picked, for a listener asked for port 0 or any."""
    if isinstance(side, TcpSide):
        return TcpSide(side.host, int(sock.getsockname()[1]))
    if isinstance(side, VsockSide) and side.route.uds is None:
        return VsockSide(side.route.with_port(int(sock.getsockname()[1])))
    return side


def tcp_peer_address(peer: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The source address of an accepted TCP connection (IPv4-mapped IPv6 unmapped)."""
    assert isinstance(peer, tuple)
    address = ipaddress.ip_address(peer[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def side_of(sock: socket.socket) -> Side:
    """The side a listening socket someone else opened (systemd) waits on."""
    name = sock.getsockname()
    if sock.family == AF_VSOCK:
        return VsockSide(Route(VsockAddress(int(name[0]), int(name[1]))))
    if sock.family == socket.AF_UNIX:
        return UnixSide(name.decode(errors="replace") if isinstance(name, bytes) else str(name))
    return TcpSide(str(name[0]), int(name[1]))


def same_side(asked: Side, passed: Side) -> bool:
    """Whether a socket waiting on ``passed`` is what the command line ``asked`` for
    (any CID, port 0 or any ask for no particular one)."""
    if isinstance(asked, VsockSide) and asked.route.uds is not None:
        asked = UnixSide(listener_path(asked.route.uds, asked.route.port))
    if isinstance(asked, VsockSide) and isinstance(passed, VsockSide):
        a, p = asked.route.address, passed.route.address
        return a.port in (p.port, VMADDR_PORT_ANY) and a.cid in (p.cid, VMADDR_CID_ANY)
    if isinstance(asked, TcpSide) and isinstance(passed, TcpSide):
        try:
            same_host = ipaddress.ip_address(asked.host) == ipaddress.ip_address(passed.host)
        except ValueError:  # a name: what it resolves to
            same_host = any(i[4][0] == passed.host for i in _resolve(asked, passive=True))
        return same_host and asked.port in (0, passed.port)
    if isinstance(asked, UnixSide) and isinstance(passed, UnixSide):
        return os.path.realpath(asked.path) == os.path.realpath(passed.path)
    return False
