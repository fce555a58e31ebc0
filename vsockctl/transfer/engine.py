"""Moving bytes between a connected socket and a source or sink, with stats.

The loops reuse one preallocated buffer per direction (``recv_into`` into a
``memoryview``, ``sendall`` of a slice of it), so memory stays flat and Python
adds no copies of its own. Socket failures are raised as
:class:`~vsockctl.errors.VsockError` naming the operation; the stats object
is filled as bytes move, so a caller can report partial results after an
error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from vsockctl.errors import LocalIOError, Operation, VsockError
from vsockctl.signals import stop_after_loop
from vsockctl.transfer.kernel_copy import SENDFILE_REFUSED, SpliceOut, sendfile_helps
from vsockctl.transfer.stats import OnProgress, TransferStats
from vsockctl.transfer.streams import Sink, Source
from vsockctl.vsock.address import Endpoint
from vsockctl.vsock.hybrid import linger

if TYPE_CHECKING:
    from hashlib import _Hash as Digest

DEFAULT_CHUNK = 1024 * 1024  # bytes per call: the best a Python loop does on vsock (1 MiB)
MESSAGE_BUFFER = 1024 * 1024  # receive buffer for seqpacket messages
MESSAGE_SEND_CHUNK = 64 * 1024  # one seqpacket message, unless told (send, a relay)
DRAIN_BUFFER = 64 * 1024  # what a sender reads while it waits for its receiver to close
PROGRESS_INTERVAL_NS = 100_000_000
END_OF_STREAM_ERRNOS = frozenset({errno.ENOTCONN})  # many peers' close reads as ENOTCONN
PEER_GONE_ERRNOS = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN})


def _flush_quietly(sink: Sink) -> None:
    """Flush what arrived before an error, without hiding that error behind another."""
    with contextlib.suppress(OSError):
        sink.flush()


def _recv(sock: socket.socket, view: memoryview, flags: int, address: Endpoint | None) -> int:
    """``recv_into``; 0 at the end of the stream, however the peer's close reads."""
    try:
        return sock.recv_into(view, 0, flags)
    except OSError as exc:
        if exc.errno in END_OF_STREAM_ERRNOS:
            return 0
        raise VsockError.wrap(exc, Operation.RECV, address) from exc


class Transfer:
    """One transfer: the loops that move its bytes, and what they keep besides.

    ``stats`` fills in as bytes move (so a caller can report partial results
    after an error or Ctrl-C); with ``sha256`` the bytes are digested;
    ``progress`` is called at most every 100 ms; ``address`` names the peer in
    errors.
    """

    def __init__(
        self,
        stats: TransferStats | None = None,
        *,
        sha256: bool = False,
        progress: OnProgress | None = None,
        address: Endpoint | None = None,
    ) -> None:
        self.stats = stats if stats is not None else TransferStats()
        self.sha256 = sha256
        self.progress = progress
        self.address = address
        self._next_progress_ns = 0
        self.blocked_since: float | None = None  # when the send under way began (StallWatch)

    def tick(self) -> None:
        """After each chunk: progress, if 100 ms have passed."""
        if self.progress is not None:
            now = time.monotonic_ns()
            if now >= self._next_progress_ns:
                self._next_progress_ns = now + PROGRESS_INTERVAL_NS
                self.progress(self.stats)

    @contextlib.contextmanager
    def _sending(self) -> Iterator[Digest | None]:
        """Around a send loop: the digest of what went out, kept in the stats at the end."""
        digest = hashlib.sha256() if self.sha256 else None
        try:
            yield digest
        finally:
            if digest is not None:
                self.stats.sent_sha256 = digest.hexdigest()

    @contextlib.contextmanager
    def _receiving(self, sock: socket.socket, sink: Sink) -> Iterator[Digest | None]:
        """Around a receive loop: the digest of what came in, the sink flushed however
        the loop ends, and a stop signal (Ctrl-C, SIGTERM) ending the loop after the
        bytes in hand rather than dropping them."""
        digest = hashlib.sha256() if self.sha256 else None
        try:
            with stop_after_loop(sock):
                yield digest
        except BaseException:
            _flush_quietly(sink)
            raise
        else:
            sink.flush()
        finally:
            if digest is not None:
                self.stats.received_sha256 = digest.hexdigest()

    def send_stream(self, sock: socket.socket, source: Source, chunk: int = DEFAULT_CHUNK) -> None:
        """Send everything ``source`` gives; the caller decides about shutdown.

        A regular file goes out with ``sendfile(2)`` where that is faster (see
        :func:`sendfile_helps`), unless its bytes must pass through here (--sha256).
        """
        fd = source.kernel_fd
        if (
            fd is not None
            and not self.sha256
            and sendfile_helps()
            and self._sendfile(sock, fd, chunk)
        ):
            return
        view = memoryview(bytearray(chunk))
        stats = self.stats
        with self._sending() as digest:
            while n := source.readinto(view):
                data = view[:n]
                if digest is not None:
                    digest.update(data)
                self.blocked_since = time.monotonic()
                try:
                    sock.sendall(data)
                except OSError as exc:
                    raise VsockError.wrap(exc, Operation.SEND, self.address) from exc
                self.blocked_since = None
                stats.sent_bytes += n
                self.tick()

    def _sendfile(self, sock: socket.socket, fd: int, chunk: int) -> bool:
        """Send the rest of the file ``fd`` from the page cache; False (nothing sent) when
        the kernel will not sendfile to this socket."""
        stats, out = self.stats, sock.fileno()
        while True:
            self.blocked_since = time.monotonic()
            try:
                n = os.sendfile(out, fd, None, chunk)
            except OSError as exc:
                if exc.errno in SENDFILE_REFUSED and not stats.sent_bytes:
                    return False
                raise VsockError.wrap(exc, Operation.SEND, self.address) from exc
            self.blocked_since = None
            if n == 0:
                return True
            stats.sent_bytes += n
            self.tick()

    def receive_stream(self, sock: socket.socket, sink: Sink, chunk: int = DEFAULT_CHUNK) -> None:
        """Receive until the peer closes its side, writing everything to ``sink``.

        Whatever arrived is flushed to the sink even when this ends in an error.
        A regular file or a pipe is written with ``splice(2)``, unless the bytes
        must pass through here (--sha256): the kernel moves them from the socket
        without a copy into Python (``benchmarks/kernel_copy.py`` compares the two
        paths; the README keeps the figures).
        """
        if sink.kernel_fd is not None and not self.sha256:
            self._receive_spliced(sock, sink, sink.kernel_fd, chunk)
            return
        view = memoryview(bytearray(chunk))
        stats = self.stats
        with self._receiving(sock, sink) as digest:
            while n := _recv(sock, view, 0, self.address):
                data = view[:n]
                sink.write(data)
                if digest is not None:
                    digest.update(data)
                stats.received_bytes += n
                self.tick()

    def _receive_spliced(self, sock: socket.socket, sink: Sink, fd: int, chunk: int) -> None:
        stats, source = self.stats, sock.fileno()
        sink.flush()  # what a buffered sink holds goes out first
        out = SpliceOut(fd, chunk, sink.name)
        # A splice into someone else's pipe holds that pipe's lock while it waits for the
        # socket: the reader cannot take what is already there (ssh as ProxyCommand waits
        # for the answer to what it has not read). So wait for data first, unlocked.
        wait_first = out.inlet == fd
        try:
            with self._receiving(sock, sink):
                while True:
                    if wait_first:
                        select.select([sock], [], [])
                    try:
                        n = os.splice(source, out.inlet, chunk, flags=os.SPLICE_F_MOVE)
                    except OSError as exc:
                        if exc.errno == errno.EPIPE:  # the reader of our output pipe left
                            raise LocalIOError.wrap(exc, "writing", sink.name) from exc
                        if exc.errno in END_OF_STREAM_ERRNOS:
                            break
                        raise VsockError.wrap(exc, Operation.RECV, self.address) from exc
                    if n == 0:
                        break
                    out.push(n)
                    stats.received_bytes += n
                    self.tick()
        finally:
            out.close()

    def send_messages(
        self, sock: socket.socket, source: Source, message_size: int, count: int | None = None
    ) -> None:
        """Send ``source`` as messages of ``message_size`` bytes (the last may be shorter).

        With ``count``, stop after that many messages. Each message is one
        ``send``: on seqpacket the receiver gets exactly these boundaries.
        """
        view = memoryview(bytearray(message_size))
        stats = self.stats
        with self._sending() as digest:
            while count is None or stats.sent_messages < count:
                filled = 0
                while filled < message_size and (n := source.readinto(view[filled:])):
                    filled += n
                if filled == 0:
                    break
                data = view[:filled]
                if digest is not None:
                    digest.update(data)
                try:
                    sent = sock.send(data)
                except OSError as exc:
                    raise VsockError.wrap(exc, Operation.SEND, self.address) from exc
                if sent != filled:
                    raise VsockError(
                        errno.EMSGSIZE, Operation.SEND, self.address, "message was split"
                    )
                stats.sent_bytes += sent
                stats.sent_messages += 1
                self.tick()

    def receive_messages(
        self, sock: socket.socket, sink: Sink, buffer_size: int = MESSAGE_BUFFER
    ) -> None:
        """Receive whole messages until the peer closes, counting their sizes.

        A message longer than the buffer is counted as truncated (``MSG_TRUNC``
        gives its real length); the part that fitted is written.
        """
        view = memoryview(bytearray(buffer_size))
        stats = self.stats
        with self._receiving(sock, sink) as digest:
            while size := _recv(sock, view, socket.MSG_TRUNC, self.address):
                kept = min(size, buffer_size)
                if size > buffer_size:
                    stats.truncated_messages += 1
                sink.write(view[:kept])
                if digest is not None:
                    digest.update(view[:kept])
                stats.received_bytes += kept
                stats.received_messages += 1
                stats.message_sizes[size] = stats.message_sizes.get(size, 0) + 1
                self.tick()

    def drain(self, sock: socket.socket, quiet: float | None = None) -> None:
        """Read and count until the peer closes (a sender waiting for its receiver), or
        with ``quiet`` until it has said nothing for that many seconds: a guest's
        half-close never reaches a program behind a hybrid VMM's mux (Firecracker,
        vhost-device-vsock), so a receiver there waits for our full close."""
        view = memoryview(bytearray(DRAIN_BUFFER))
        try:
            while True:
                if quiet is not None and not select.select([sock], [], [], quiet)[0]:
                    return
                n = _recv(sock, view, 0, self.address)
                if not n:
                    return
                self.stats.received_bytes += n
        except VsockError as exc:
            if exc.errno not in PEER_GONE_ERRNOS:
                raise

    def relay(
        self,
        sock: socket.socket,
        source: Source | None,
        sink: Sink,
        *,
        source_interactive: bool = False,
        messages: bool = False,
        mux: bool = False,
    ) -> None:
        """Both directions at once, like netcat: ``source`` to the peer, the peer to ``sink``.

        When ``source`` ends, our side is shut down for writing (half-close) and
        receiving goes on until the peer closes. On a hybrid vsock connection
        (``mux``), where a half-close is a full close, the shutdown waits until
        the peer closes or falls silent (:func:`~vsockctl.vsock.hybrid.linger`). When
        the peer closes first, the rest of a piped ``source`` is still sent
        (nothing piped in is dropped), unless the peer is gone; an interactive
        ``source`` (a terminal) ends there.
        Without a ``source``, only receive, and never half-close. With
        ``messages`` (seqpacket) each send is one message of at most 64 KiB.
        """
        failures: list[BaseException] = []
        # The sending half keeps no digest and no progress: those are the receiver's.
        outgoing = Transfer(self.stats, address=self.address)
        received = threading.Event()  # the peer closed: nothing more to wait for

        def outbound() -> None:
            assert source is not None
            try:
                outgoing.send_stream(
                    sock, source, MESSAGE_SEND_CHUNK if messages else DEFAULT_CHUNK
                )
                if mux:
                    linger(lambda: self.stats.received_bytes, received.is_set)
                sock.shutdown(socket.SHUT_WR)
            except OSError as exc:  # also shutdown on a connection the peer already closed
                if exc.errno not in PEER_GONE_ERRNOS:
                    failures.append(exc)
            except BaseException as exc:
                failures.append(exc)

        sender = None
        if source is not None:
            sender = threading.Thread(target=outbound, name="vsockctl-send", daemon=True)
            sender.start()
        try:
            self.receive_stream(sock, sink, MESSAGE_BUFFER if messages else DEFAULT_CHUNK)
            received.set()
            if sender is not None and not source_interactive:
                sender.join()
        finally:
            self.stats.finish()
        if failures:
            raise failures[0]
