"""``forward``'s engine: accept on one side, connect to the other, relay both ways.

A connection starts in one thread's event loop (:mod:`vsockctl.forward.loop`):
accept, non-blocking connect, first bytes. One that carries more goes to two
threads, one per direction, each blocked in the kernel
(:func:`~vsockctl.forward.direction.pump`), splicing where that helps; an idle connection
there costs two parked threads and no buffer. The threads are reused
(:class:`~vsockctl.forward.workers.Workers`). Targets the loop cannot connect to
without blocking (hybrid vsock, ``VMADDR_FLAG_TO_HOST``, the others
:func:`~vsockctl.forward.sides.start_connect` names) connect on a worker.
One connection failing (the target refuses, either end resets) closes that
connection only. The caller learns of every event through an
:class:`Observer`, from whichever thread it happens on.
"""

from __future__ import annotations

import contextlib
import errno
import resource
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from vsockctl.errors import Operation, VsockError
from vsockctl.events.forward import Outcome
from vsockctl.forward.direction import Broken, Direction, pump
from vsockctl.forward.flow import Allow, Flow, Observer, Pending, Refusal, Totals
from vsockctl.forward.loop import Loop
from vsockctl.forward.sides import (
    VSOCK_CONNECT_TIMEOUT,
    Side,
    VsockSide,
    connect_side,
    start_connect,
    tcp_peer_address,
)
from vsockctl.forward.workers import Workers
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.hybrid import linger
from vsockctl.vsock.sockets import SocketFactory

DEFAULT_MAX_CONNECTIONS = 256
STOP_GRACE = 2.0  # seconds connections get to report when the forwarder stops
FDS_PER_CONNECTION = 6  # two sockets and, while bytes flow, a pipe each way
SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
ACCEPT_BATCH = 16  # clients accepted at most per wake-up, before other sockets get a turn
OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


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
    timeout: float | None = VSOCK_CONNECT_TIMEOUT  # None: as long as the kernel tries
    factory: SocketFactory = socket.socket
    splice: bool | None = None
    totals: Totals = field(init=False, default_factory=Totals)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _live: dict[Flow, tuple[socket.socket, socket.socket]] = field(init=False, default_factory=dict)
    _serving: int = field(init=False, default=0)  # connections accepted and not yet done
    _stopping: bool = field(init=False, default=False)
    _workers: Workers = field(init=False, default_factory=lambda: Workers("forward"))
    _loop: Loop = field(init=False)

    def __post_init__(self) -> None:
        self._free = self.max_connections  # connection slots (under _lock)
        self._family = self.listener.family  # read once: each read builds an enum
        self._all_done = threading.Condition(self._lock)
        target = self.target
        self.target_is_mux = isinstance(target, VsockSide) and target.route.uds is not None

    def serve(self, accepted: Callable[[], None] | None = None) -> None:
        """Accept and relay until the calling thread is interrupted (Ctrl-C, SIGTERM),
        :meth:`stop` or the listener is closed; ``accepted`` runs after each accept
        (for tests)."""
        self.listener.setblocking(False)
        loop = self._loop = Loop(self, self.listener, self.target, self.timeout)
        slot = False  # a connection slot is held for the next client
        try:
            while not self._stopping and self.listener.fileno() != -1:
                if not slot:
                    slot = self._take_slot()
                loop.watch_listener(slot)
                # Woken every half second (a vsock listener's accept does not end when
                # stop() shuts it down from another thread), or sooner for a free slot.
                if not loop.poll(0.5 if slot else 0.05):
                    continue
                # Clients come in bursts: those waiting are taken in one wake-up.
                for _ in range(ACCEPT_BATCH):
                    if not slot and not (slot := self._take_slot()):
                        break
                    try:
                        fd, address = self.listener._accept()  # type: ignore[attr-defined]
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as exc:
                        if self._stopping or exc.errno == errno.EBADF:
                            return
                        if exc.errno in OUT_OF_FDS:  # wait for connections to close
                            self.observer.refused(
                                "(next client)",
                                Refusal.ACCEPT_FAILED,
                                f"cannot accept: {exc.strerror}",
                            )
                            time.sleep(0.1)
                            break
                        raise VsockError.wrap(exc, Operation.ACCEPT) from exc
                    slot = False
                    # Not socket.accept(): that reads the listener's family and type
                    # (each builds an enum) and sets the new socket blocking, which
                    # accept(2) made it already.
                    conn = socket.socket(self._family, socket.SOCK_STREAM, 0, fd)
                    self._start(conn, address)
                    if accepted is not None:
                        accepted()
        finally:  # the loop's connections end with it; the workers' end in stop()
            if slot:
                self._give_slot()
            loop.stop()

    def _take_slot(self) -> bool:
        with self._lock:
            if not self._free:
                return False
            self._free -= 1
            return True

    def _give_slot(self) -> None:
        with self._lock:
            self._free += 1

    def _start(self, conn: socket.socket, address: object) -> None:
        peer = self._peer_name(conn, address)
        if self.allow is not None and not self.allow.permits(self._family, address):
            # Counted and reported before the client sees the close: a stop signal
            # arriving right after must not lose the refusal.
            with self._lock:
                self.totals.refused += 1
            self.observer.refused(peer, Refusal.NOT_ALLOWED, "not allowed by --allow")
            conn.close()
            self._give_slot()
            return
        try:
            started = start_connect(self.target, self.timeout, self.factory)
        except Exception as exc:
            try:  # reported before the client sees the close
                self.connect_failed(peer, exc)
            finally:
                conn.close()
            return
        if started is not None:
            self._loop.add(conn, peer, started)
            return
        with self._lock:
            self._serving += 1
        self._workers.run(self._serve, conn, peer)

    def _peer_name(self, conn: socket.socket, address: object) -> str:
        if isinstance(address, tuple) and self._family in (socket.AF_INET, socket.AF_INET6):
            # An IPv4 listener's peers come as dotted quads already; an IPv6 one's
            # may be IPv4-mapped.
            host = address[0] if self._family == socket.AF_INET else str(tcp_peer_address(address))
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
        """A worker's whole connection: the blocking connect (hybrid vsock and the
        other targets :func:`start_connect` leaves out), then both directions."""
        try:
            with conn:
                try:
                    upstream = connect_side(self.target, self.timeout, self.factory)
                except Exception as exc:
                    self.connect_failed(peer, exc, release=False)
                    return
                with upstream:
                    flow = Flow(peer, str(self.target))
                    self.opened(flow, conn, upstream)
                    self._relay(Pending(flow, conn, upstream))
        finally:
            self._done_serving()

    def _continue(self, pending: Pending) -> None:
        """A worker's share of a connection the loop handed off."""
        try:
            with pending.conn, pending.upstream:
                self._relay(pending)
        finally:
            self._done_serving()

    def _done_serving(self) -> None:
        self._give_slot()
        with self._all_done:
            self._serving -= 1
            self._all_done.notify_all()

    def _relay(self, pending: Pending) -> None:
        """Each direction still open on a thread, its first bytes sent first."""
        flow, conn, upstream = pending.flow, pending.conn, pending.upstream
        up, down = pending.up, pending.down
        back_done = threading.Event()

        def back(first: bytes) -> None:
            try:
                self._direction(flow, upstream, conn, flow.downstream, first)
            finally:
                back_done.set()

        if down is None:
            back_done.set()
        elif up is None:
            back(down)
        else:
            self._workers.run(back, down)
        if up is not None:

            def guest_done() -> None:  # a half-close into a mux is a full close: wait first
                linger(lambda: flow.downstream.bytes, back_done.is_set)

            wait = guest_done if self.target_is_mux else None
            self._direction(flow, conn, upstream, flow.upstream, up, wait)
        back_done.wait()
        self._close(flow)

    # -- what the loop (and the workers) report: loop.Owner ---------------------

    def opened(self, flow: Flow, conn: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            self._live[flow] = (conn, upstream)
            self.totals.opened += 1
            stopping = self._stopping
        if stopping:  # stopped between accept and here
            flow.outcome = Outcome.STOPPED
            _shut(conn, upstream)
        self.observer.opened(flow)

    def connect_failed(self, peer: str, error: BaseException, *, release: bool = True) -> None:
        with self._lock:
            self.totals.failed += 1
        self.observer.failed(peer, str(self.target), error)
        if release:
            self._give_slot()

    def finished(self, flow: Flow) -> None:
        self._close(flow)
        self._give_slot()

    def hand_off(self, pending: Pending) -> None:
        with self._lock:
            self._serving += 1
        self._workers.run(self._continue, pending)

    def _close(self, flow: Flow) -> None:
        flow.ended_ns = time.monotonic_ns()
        with self._lock:
            del self._live[flow]
            self.totals.upstream.bytes += flow.upstream.bytes
            self.totals.downstream.bytes += flow.downstream.bytes
        self.observer.closed(flow)

    def _direction(
        self,
        flow: Flow,
        src: socket.socket,
        dst: socket.socket,
        direction: Direction,
        first: bytes,
        before_shutdown: Callable[[], None] | None = None,
    ) -> None:
        try:
            pump(src, dst, direction, self.splice, first, before_shutdown)
        except Broken as broken:
            with self._lock:
                if flow.outcome is Outcome.DONE:
                    flow.outcome = Outcome.broken_on(broken.side)
                    flow.error = broken.error
            _shut(src, dst)  # the other direction ends too

    def stop(self) -> None:
        """Stop accepting and end every connection; each reports its close."""
        with self._lock:
            self._stopping = True
            for flow, socks in self._live.items():
                if flow.outcome is Outcome.DONE:
                    flow.outcome = Outcome.STOPPED
                _shut(*socks)
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        with self._all_done:
            self._all_done.wait_for(lambda: self._serving == 0, STOP_GRACE)


def _shut(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
