"""``forward``'s front: one thread and one epoll for accepting, connecting and short
connections.

A connection starts here: the accept, a non-blocking connect to the target and
its first bytes each way cost no thread at all, which is what makes short
connections cheap (``benchmarks/forward.py`` measures connections a second
against two threads per connection and against socat; the README keeps the
figures). A connection that turns out to carry
more (a full buffer in one read, or a destination that cannot take a whole read
at once) goes to :meth:`Owner.hand_off`: two threads in the kernel, splicing,
hold bulk rates where this loop would take the GIL for every 64 KiB.
"""

from __future__ import annotations

import contextlib
import errno
import math
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Protocol

from vsockctl.events.forward import Outcome
from vsockctl.forward.direction import Direction
from vsockctl.forward.flow import Flow, Pending
from vsockctl.forward.sides import Side, Started, connect_error
from vsockctl.transfer.engine import END_OF_STREAM_ERRNOS

LOOP_BUFFER = 64 * 1024  # one read; a read that fills it marks a bulk connection


class Owner(Protocol):
    """What the loop needs of the forwarder."""

    def opened(self, flow: Flow, conn: socket.socket, upstream: socket.socket) -> None: ...

    def connect_failed(self, peer: str, error: BaseException) -> None: ...

    def finished(self, flow: Flow) -> None: ...

    def hand_off(self, pending: Pending) -> None: ...


@dataclass(eq=False)
class _Connecting:
    client: socket.socket
    peer: str
    upstream: socket.socket
    deadline: float


@dataclass(eq=False)
class _Way:
    """One direction of a pair; ``open`` until its source ends."""

    src: socket.socket
    dst: socket.socket
    direction: Direction
    open: bool = True


@dataclass(eq=False)
class _Pair:
    """A connection in the loop: client to target (``ways[0]``) and back (``ways[1]``)."""

    flow: Flow
    conn: socket.socket
    upstream: socket.socket
    ways: list[_Way] = field(init=False)

    def __post_init__(self) -> None:
        self.ways = [
            _Way(self.conn, self.upstream, self.flow.upstream),
            _Way(self.upstream, self.conn, self.flow.downstream),
        ]


class Loop:
    """The epoll over the listener, connects under way and short connections."""

    def __init__(
        self, owner: Owner, listener: socket.socket, target: Side, timeout: float | None
    ) -> None:
        self.owner = owner
        self.listener = listener
        self.target = target
        self._target_name = str(target)
        self.timeout = timeout
        self._poller = select.epoll()
        self._buffer = memoryview(bytearray(LOOP_BUFFER))
        self._connecting: dict[int, _Connecting] = {}
        self._reading: dict[int, tuple[_Pair, _Way]] = {}
        self._pairs: set[_Pair] = set()
        self._listening = False

    def watch_listener(self, on: bool) -> None:
        if on != self._listening:
            if on:
                self._poller.register(self.listener.fileno(), select.EPOLLIN)
            else:
                with contextlib.suppress(OSError, ValueError):  # closed: gone from epoll
                    self._poller.unregister(self.listener.fileno())
            self._listening = on

    def poll(self, timeout: float) -> bool:
        """Serve what is ready within ``timeout``; True when a client waits to be accepted."""
        listener = self.listener.fileno()
        waiting = False
        for fd, _ in self._poller.poll(timeout):
            if fd == listener:
                waiting = True
            elif fd in self._connecting:
                self._connected(fd)
            elif fd in self._reading:
                self._read(*self._reading[fd])
        if self._connecting:
            now = time.monotonic()
            for fd in [fd for fd, c in self._connecting.items() if c.deadline <= now]:
                self._fail(fd, errno.ETIMEDOUT)
        return waiting

    def add(self, client: socket.socket, peer: str, started: Started) -> None:
        """Relay ``client`` once ``started``'s non-blocking connect ends."""
        upstream = started.sock
        if started.done:
            self._open(client, peer, upstream, watched=False)
            return
        fd = upstream.fileno()
        # A vsock connect ends by its own timeout; this is the backstop. Without a
        # timeout, the kernel decides (TCP's SYN retries).
        deadline = math.inf if self.timeout is None else time.monotonic() + self.timeout + 0.5
        self._connecting[fd] = _Connecting(client, peer, upstream, deadline)
        self._poller.register(fd, select.EPOLLOUT)

    def _connected(self, fd: int) -> None:
        err = self._connecting[fd].upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(fd, err)
            return
        pending = self._connecting.pop(fd)
        self._open(pending.client, pending.peer, pending.upstream, watched=True)

    def _open(self, conn: socket.socket, peer: str, upstream: socket.socket, watched: bool) -> None:
        """Relay between ``conn`` and the connected ``upstream`` (``watched``: still
        registered, for its connect to end)."""
        conn.setblocking(False)
        pair = _Pair(Flow(peer, self._target_name), conn, upstream)
        self._pairs.add(pair)
        self.owner.opened(pair.flow, conn, upstream)
        self._reading[conn.fileno()] = (pair, pair.ways[0])
        self._reading[upstream.fileno()] = (pair, pair.ways[1])
        self._poller.register(conn.fileno(), select.EPOLLIN)
        if watched:
            self._poller.modify(upstream.fileno(), select.EPOLLIN)
        else:
            self._poller.register(upstream.fileno(), select.EPOLLIN)

    def _fail(self, fd: int, err: int) -> None:
        pending = self._connecting.pop(fd)
        pending.upstream.close()  # closing a socket takes it out of the epoll
        try:  # reported before the client sees the close, as a refusal is
            self.owner.connect_failed(pending.peer, connect_error(self.target, err))
        finally:
            pending.client.close()

    def _read(self, pair: _Pair, way: _Way) -> None:
        try:
            n = way.src.recv_into(self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno not in END_OF_STREAM_ERRNOS:
                self._break(pair, way.direction.source, exc)
                return
            n = 0
        if not n:
            self._end(pair, way)
            return
        try:
            sent = way.dst.send(self._buffer[:n])
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._break(pair, way.direction.sink, exc)
            return
        way.direction.bytes += sent
        if sent < n or n == len(self._buffer):
            self._hand_off(pair, way, bytes(self._buffer[sent:n]))

    def _end(self, pair: _Pair, way: _Way) -> None:
        """``way``'s source ended: half-close its destination; the pair ends with both
        (closing both sockets half-closes that one too)."""
        way.open = False
        if not any(w.open for w in pair.ways):
            self._finish(pair)
            return
        self._unwatch(way)
        with contextlib.suppress(OSError):
            way.dst.shutdown(socket.SHUT_WR)

    def _break(self, pair: _Pair, side: str, error: OSError) -> None:
        if pair.flow.outcome is Outcome.DONE:
            pair.flow.outcome = Outcome.broken_on(side)
            pair.flow.error = error
        self._finish(pair)

    def _unwatch(self, way: _Way) -> None:
        fd = way.src.fileno()
        if self._reading.pop(fd, None) is not None:
            self._poller.unregister(fd)

    def _finish(self, pair: _Pair) -> None:
        for way in pair.ways:  # the close takes the sockets out of the epoll
            self._reading.pop(way.src.fileno(), None)
        self._pairs.discard(pair)
        pair.conn.close()
        pair.upstream.close()
        self.owner.finished(pair.flow)

    def _hand_off(self, pair: _Pair, way: _Way, unsent: bytes) -> None:
        for each in pair.ways:
            self._unwatch(each)
        self._pairs.discard(pair)
        pair.conn.setblocking(True)
        pair.upstream.setblocking(True)
        up, down = ((unsent if w is way else b"") if w.open else None for w in pair.ways)
        self.owner.hand_off(Pending(pair.flow, pair.conn, pair.upstream, up, down))

    def stop(self) -> None:
        """End every connection here (the forwarder stops): connects under way fail,
        pairs close as stopped."""
        for fd in list(self._connecting):
            self._fail(fd, errno.ECANCELED)
        for pair in list(self._pairs):
            if pair.flow.outcome is Outcome.DONE:
                pair.flow.outcome = Outcome.STOPPED
            self._finish(pair)
        self.watch_listener(False)
        self._poller.close()
