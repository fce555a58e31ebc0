"""One direction of a forwarded connection: bytes from one socket into another.

:func:`pump` waits for the first byte without a buffer (an idle connection
holds no memory), then moves bytes until the source's end and half-closes the
destination, so the other direction stays open. Where the kernel can, the
bytes go socket to pipe to socket with ``splice(2)`` and never enter Python;
where it cannot do that well (into vsock before Linux 6.5, which takes spliced
pages one 4 KiB packet at a time, see :func:`~vsockctl.transfer.kernel_copy.sendfile_helps`)
they go through one reused buffer with ``recv_into`` and ``sendall``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from vsockctl.transfer.engine import END_OF_STREAM_ERRNOS
from vsockctl.transfer.kernel_copy import F_SETPIPE_SZ, SPLICE_REFUSED, sendfile_helps
from vsockctl.vsock.constants import AF_VSOCK

BUFFER_SIZE = 256 * 1024  # the buffer of a direction that copies
PIPE_SIZE = 1 << 20  # what one splice moves at most (the pipe's size, if the kernel allows it)


class Broken(Exception):
    """A direction failed on ``side`` ("client" or "target"): ``error`` says how."""

    def __init__(self, side: str, error: OSError) -> None:
        super().__init__(f"{side}: {error}")
        self.side = side
        self.error = error


@dataclass
class Direction:
    """From ``source`` to ``sink`` (each "client" or "target"): bytes moved so far."""

    source: str
    sink: str
    bytes: int = 0


def splices_well(dst: socket.socket) -> bool:
    """Whether splicing into ``dst`` beats copying (everywhere but old vsock)."""
    return dst.family != AF_VSOCK or sendfile_helps()


def pump(
    src: socket.socket,
    dst: socket.socket,
    direction: Direction,
    splice: bool | None = None,
    first: bytes = b"",
    before_shutdown: Callable[[], None] | None = None,
) -> None:
    """Move ``first``, then everything ``src`` sends, into ``dst``; then shut ``dst``'s
    writing side (after ``before_shutdown``: a hybrid vsock mux's linger).

    ``splice`` forces the way (None: :func:`splices_well`). Raises :class:`Broken`.
    """
    if first:  # bytes read before this pump took over (forward's event loop)
        try:
            dst.sendall(first)
        except OSError as exc:
            raise Broken(direction.sink, exc) from exc
        direction.bytes += len(first)
    try:
        peeked = src.recv(1, socket.MSG_PEEK)  # blocks until data or the end, holding nothing
    except OSError as exc:
        if exc.errno not in END_OF_STREAM_ERRNOS:
            raise Broken(direction.source, exc) from exc
        peeked = b""
    if peeked:
        if splice is None:
            splice = splices_well(dst)
        if not splice or not _splice(src, dst, direction):
            _copy(src, dst, direction)
    if before_shutdown is not None:
        before_shutdown()
    with contextlib.suppress(OSError):  # a peer already gone shows in the other direction
        dst.shutdown(socket.SHUT_WR)


def _copy(src: socket.socket, dst: socket.socket, direction: Direction) -> None:
    view = memoryview(bytearray(BUFFER_SIZE))
    while True:
        try:
            n = src.recv_into(view)
        except OSError as exc:
            if exc.errno in END_OF_STREAM_ERRNOS:
                return
            raise Broken(direction.source, exc) from exc
        if not n:
            return
        try:
            dst.sendall(view[:n])
        except OSError as exc:
            raise Broken(direction.sink, exc) from exc
        direction.bytes += n


def _splice(src: socket.socket, dst: socket.socket, direction: Direction) -> bool:
    """Splice until the end; False when the kernel refuses before anything moved."""
    outlet, inlet = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # a smaller pipe only means more calls
        fcntl.fcntl(inlet, F_SETPIPE_SZ, PIPE_SIZE)
    source, sink = src.fileno(), dst.fileno()
    try:
        while True:
            try:
                n = os.splice(source, inlet, PIPE_SIZE, flags=os.SPLICE_F_MOVE)
            except OSError as exc:
                if exc.errno in SPLICE_REFUSED and not direction.bytes:
                    return False
                if exc.errno in END_OF_STREAM_ERRNOS:
                    return True
                raise Broken(direction.source, exc) from exc
            if not n:
                return True
            while n:
                try:
                    moved = os.splice(outlet, sink, n, flags=os.SPLICE_F_MOVE)
                except OSError as exc:
                    if exc.errno in SPLICE_REFUSED:  # write what the pipe holds; copy on
                        _empty_pipe(outlet, dst, n, direction)
                        return False
                    raise Broken(direction.sink, exc) from exc
                n -= moved
                direction.bytes += moved
    finally:
        os.close(outlet)
        os.close(inlet)


def _empty_pipe(outlet: int, dst: socket.socket, n: int, direction: Direction) -> None:
    while n:
        data = os.read(outlet, min(n, BUFFER_SIZE))
        try:
            dst.sendall(data)
        except OSError as exc:
            raise Broken(direction.sink, exc) from exc
        n -= len(data)
        direction.bytes += len(data)
