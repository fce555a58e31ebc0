"""``forward``'s engine: accept on one side, connect to the other, relay both ways.

Each connection has two threads, one per direction, each blocked in the kernel
(:func:`~vsockctl.relay.pump`); an idle connection costs two parked threads and
no buffer. The threads are reused (:class:`~vsockctl.workers.Workers`): a short
connection does not pay for starting two. One connection failing (the target
refuses, either end resets) closes that connection only. The caller learns of
every event through an :class:`Observer`, from whichever thread it happens on.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import resource
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Protocol

from vsockctl.address import VsockAddress
from vsockctl.errors import VsockError
from vsockctl.forward_address import Side, VsockSide, connect_side, tcp_peer_address
from vsockctl.relay import Broken, Direction, pump
from vsockctl.sockets import SocketFactory
from vsockctl.workers import Workers

DEFAULT_MAX_CONNECTIONS = 256
STOP_GRACE = 2.0  # seconds connections get to report when the forwarder stops
FDS_PER_CONNECTION = 6  # two sockets and, while bytes flow, a pipe each way
SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# Why a connection closed
DONE = "done"  # both ends closed their sides
CLIENT_ERROR = "client_error"  # the client reset or vanished
TARGET_ERROR = "target_error"  # the target reset or vanished
STOPPED = "stopped"  # the forwarder was stopped (Ctrl-C, SIGTERM)


@dataclass(eq=False)  # each flow is itself: a key of the live table
class Flow:
    """One forwarded connection: who, where to, what moved, and how it ended."""

    peer: str
    target: str
    started_ns: int = field(default_factory=time.monotonic_ns)
    ended_ns: int | None = None
    reason: str = DONE
    error: OSError | None = None
    upstream: Direction = field(default_factory=lambda: Direction("client", "target"))
    downstream: Direction = field(default_factory=lambda: Direction("target", "client"))

    @property
    def duration_ns(self) -> int:
        return (self.ended_ns or time.monotonic_ns()) - self.started_ns


@dataclass
class Totals:
    """Everything the forwarder did, for the line it prints when it stops."""

    started_ns: int = field(default_factory=time.monotonic_ns)
    opened: int = 0
    failed: int = 0
    refused: int = 0
    upstream: Direction = field(default_factory=lambda: Direction("clients", "target"))
    downstream: Direction = field(default_factory=lambda: Direction("target", "clients"))


class Observer(Protocol):
    """What the forwarder reports; called from the connections' threads."""

    def opened(self, flow: Flow) -> None: ...

    def closed(self, flow: Flow) -> None: ...

    def failed(self, peer: str, target: str, error: BaseException) -> None: ...

    def refused(self, peer: str, why: str) -> None: ...


@dataclass(frozen=True)
class Allow:
    """Who may connect: peer CIDs (a vsock listener) or source networks (TCP)."""

    cids: frozenset[int] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def permits(self, family: int, address: object) -> bool:
        if family in (socket.AF_INET, socket.AF_INET6):
            source = tcp_peer_address(address)
            return any(source in network for network in self.networks)
        assert isinstance(address, tuple)
        return int(address[0]) in self.cids


def make_room_for(connections: int) -> None:
    """Raise the soft limit on open files, up to the hard one, to serve ``connections``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections * FDS_PER_CONNECTION + 64
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


@dataclass(eq=False)
class Forwarder:
    """Accepts on ``listener`` and relays each connection to ``target``."""

    listener: socket.socket
    listen_side: Side
    target: Side
    observer: Observer
    _: KW_ONLY
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    allow: Allow | None = None
    timeout: float = 5.0
    factory: SocketFactory = socket.socket
    splice: bool | None = None
    totals: Totals = field(init=False, default_factory=Totals)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _live: dict[Flow, tuple[socket.socket, socket.socket]] = field(init=False, default_factory=dict)
    _serving: int = field(init=False, default=0)  # connections accepted and not yet done
    _stopping: bool = field(init=False, default=False)
    _workers: Workers = field(init=False, default_factory=lambda: Workers("forward"))

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._all_done = threading.Condition(self._lock)

    def serve(self, accepted: Callable[[], None] | None = None) -> None:
        """Accept and relay until the calling thread is interrupted (Ctrl-C, SIGTERM)
        or the listener is closed; ``accepted`` runs after each accept (for tests)."""
        while True:
            self._slots.acquire()
            try:
                # Woken every half second: a vsock listener's accept() does not end when
                # stop() shuts it down from another thread.
                while not select.select([self.listener], [], [], 0.5)[0]:
                    if self._stopping:
                        self._slots.release()
                        return
                conn, address = self.listener.accept()
            except OSError as exc:
                self._slots.release()
                if self._stopping or exc.errno == errno.EBADF:
                    return
                if exc.errno in OUT_OF_FDS:  # wait for connections to close
                    self.observer.refused("(next client)", f"cannot accept: {exc.strerror}")
                    time.sleep(0.1)
                    continue
                raise VsockError.wrap(exc, "accept") from exc
            self._start(conn, address)
            if accepted is not None:
                accepted()

    def _start(self, conn: socket.socket, address: object) -> None:
        peer = self._peer_name(conn, address)
        if self.allow is not None and not self.allow.permits(conn.family, address):
            # Counted and reported before the client sees the close: a stop signal
            # arriving right after must not lose the refusal.
            with self._lock:
                self.totals.refused += 1
            self.observer.refused(peer, "not allowed by --allow")
            conn.close()
            self._slots.release()
            return
        with self._lock:
            self._serving += 1
        self._workers.run(self._serve, conn, peer)

    def _peer_name(self, conn: socket.socket, address: object) -> str:
        if isinstance(address, tuple) and self.listener.family in (
            socket.AF_INET,
            socket.AF_INET6,
        ):
            host = str(tcp_peer_address(address))
            return f"tcp:[{host}]:{address[1]}" if ":" in host else f"tcp:{host}:{address[1]}"
        if isinstance(address, tuple) and isinstance(self.listen_side, VsockSide):
            return f"vsock:{VsockAddress(int(address[0]), int(address[1]))}"
        # A Unix socket's clients have no address: the process on the other end names them.
        try:
            pid, _, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, 12))
        except OSError:
            return str(self.listen_side)
        return f"{self.listen_side} pid {pid}"

    def _serve(self, conn: socket.socket, peer: str) -> None:
        try:
            with conn:
                try:
                    upstream = connect_side(self.target, self.timeout, self.factory)
                except Exception as exc:
                    with self._lock:
                        self.totals.failed += 1
                    self.observer.failed(peer, str(self.target), exc)
                    return
                with upstream:
                    self._relay(Flow(peer, str(self.target)), conn, upstream)
        finally:
            self._slots.release()
            with self._all_done:
                self._serving -= 1
                self._all_done.notify_all()

    def _relay(self, flow: Flow, conn: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            self._live[flow] = (conn, upstream)
            self.totals.opened += 1
            stopping = self._stopping
        if stopping:  # stopped between accept and here
            flow.reason = STOPPED
            _shut(conn, upstream)
        self.observer.opened(flow)
        back_done = threading.Event()

        def back() -> None:
            try:
                self._direction(flow, upstream, conn, flow.downstream)
            finally:
                back_done.set()

        self._workers.run(back)
        self._direction(flow, conn, upstream, flow.upstream)
        back_done.wait()
        flow.ended_ns = time.monotonic_ns()
        with self._lock:
            del self._live[flow]
            self.totals.upstream.bytes += flow.upstream.bytes
            self.totals.downstream.bytes += flow.downstream.bytes
        self.observer.closed(flow)

    def _direction(
        self, flow: Flow, src: socket.socket, dst: socket.socket, direction: Direction
    ) -> None:
        try:
            pump(src, dst, direction, self.splice)
        except Broken as broken:
            with self._lock:
                if flow.reason == DONE:
                    flow.reason = CLIENT_ERROR if broken.side == "client" else TARGET_ERROR
                    flow.error = broken.error
            _shut(src, dst)  # the other direction ends too

    def stop(self) -> None:
        """Stop accepting and end every connection; each reports its close."""
        with self._lock:
            self._stopping = True
            for flow, socks in self._live.items():
                if flow.reason == DONE:
                    flow.reason = STOPPED
                _shut(*socks)
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        with self._all_done:
            self._all_done.wait_for(lambda: self._serving == 0, STOP_GRACE)


def _shut(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
