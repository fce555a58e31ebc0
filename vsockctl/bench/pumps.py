"""The data loops of a throughput test: as little Python per byte as the kernel allows.

Each loop runs on its own thread over one preallocated buffer (``sendall`` of
a memoryview, ``recv_into``), bumping a :class:`Counter` that an interval
sampler reads from another thread.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vsockctl.errors import Operation, VsockError, VsockUnavailableError
from vsockctl.events.throughput import Counts, Interval, StreamTotals
from vsockctl.vsock.constants import SO_ZEROCOPY

MSG_ZEROCOPY = getattr(socket, "MSG_ZEROCOPY", 0x4000000)
SO_EE_ORIGIN_ZEROCOPY = 5
SO_EE_CODE_ZEROCOPY_COPIED = 1
SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")


@dataclass
class Counter:
    """Bytes moved on one stream in one direction, and when the first and last moved."""

    bytes: int = 0
    calls: int = 0
    first_ns: int = 0
    last_ns: int = 0
    error: str | None = None
    errno: int | None = None
    until: int = sys.maxsize  # a receiver stops here: what its sender says it sent

    def fail(self, exc: OSError) -> None:
        self.error = _describe(exc)
        self.errno = exc.errno

    @property
    def elapsed_ns(self) -> int:
        return max(0, self.last_ns - self.first_ns)

    def to_record(self) -> StreamTotals:
        elapsed_ns = self.elapsed_ns
        return {
            "bytes": self.bytes,
            "calls": self.calls,
            "elapsed_ns": elapsed_ns,
            "seconds": elapsed_ns / 1e9,
            "error": self.error,
            "errno": self.errno,
            "bits_per_second": self.bytes * 8e9 / elapsed_ns if elapsed_ns else 0.0,
        }


@dataclass
class Limit:
    """When a sender stops: after ``seconds`` or ``nbytes`` (whichever is set), or on ``stop``."""

    seconds: float | None = None
    nbytes: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass
class ZeroCopyStats:
    """MSG_ZEROCOPY on one socket. The kernel numbers its notifications 0, 1, 2 ...;
    vsock may take several for one sendmsg (one per part it queues), so every send
    completed means: each number up to the highest seen came back, and at least one
    per sendmsg."""

    sends: int = 0  # sendmsg calls
    completed: int = 0  # notification numbers that came back
    ids: int = 0  # the highest number seen, plus one
    copied: int = 0  # completions where the kernel fell back to copying

    @property
    def all_completed(self) -> bool:
        return self.completed == self.ids and self.completed >= self.sends

    def add(self, other: ZeroCopyStats) -> None:
        self.sends += other.sends
        self.completed += other.completed
        self.ids += other.ids
        self.copied += other.copied


def enable_zerocopy(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOPROTOOPT, errno.EINVAL):
            raise VsockUnavailableError(
                "this kernel has no MSG_ZEROCOPY on vsock sockets",
                "vsock zerocopy needs Linux 6.7+ (virtio, vhost or loopback); run without "
                "--zerocopy",
            ) from exc
        raise VsockError.wrap(exc, Operation.SETSOCKOPT, option="SO_ZEROCOPY") from exc


def _drain_completions(sock: socket.socket, stats: ZeroCopyStats) -> None:
    """Read zerocopy completions from the error queue (non-blocking)."""
    while True:
        try:
            _, ancdata, _, _ = sock.recvmsg(0, 1024, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        for _, _, data in ancdata:
            if len(data) < SOCK_EXTENDED_ERR.size:
                continue
            _, origin, _, code, _, lo, hi = SOCK_EXTENDED_ERR.unpack_from(data)
            if origin == SO_EE_ORIGIN_ZEROCOPY:
                count = (hi - lo + 1) & 0xFFFFFFFF
                stats.completed += count
                stats.ids = max(stats.ids, hi + 1)
                if code & SO_EE_CODE_ZEROCOPY_COPIED:
                    stats.copied += count


def send_loop(
    sock: socket.socket,
    buf: memoryview,
    counter: Counter,
    limit: Limit,
    *,
    zerocopy: ZeroCopyStats | None = None,
) -> None:
    """Send ``buf`` over and over until the limit; then shut down writing.

    Per call the loop does what a bare ``sendall`` loop does plus one counter
    update (the interval sampler reads it) and, in time mode, one clock read;
    everything else happens every ``CHECK_EVERY`` calls.
    """
    now = time.monotonic_ns
    counter.first_ns = counter.last_ns = now()
    try:
        if zerocopy is not None:
            _send_zerocopy(sock, buf, counter, limit=limit, stats=zerocopy)
        elif limit.nbytes is not None:
            _send_bytes(sock, buf, counter, nbytes=limit.nbytes, stop=limit.stop)
        else:
            _send_time(sock, buf, counter, seconds=limit.seconds or 0.0, stop=limit.stop)
        counter.last_ns = now()
        sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        counter.last_ns = now()
        counter.fail(exc)
    except BaseException:  # Ctrl-C, when the loop runs on the main thread
        counter.last_ns = now()
        raise


CHECK_EVERY = 64  # calls between looks at the stop flag (Ctrl-C also shuts the socket)


def _send_time(
    sock: socket.socket, buf: memoryview, counter: Counter, *, seconds: float, stop: threading.Event
) -> None:
    sendall, now, size = sock.sendall, time.monotonic_ns, len(buf)
    deadline = now() + int(seconds * 1e9)
    calls = 0
    while True:
        sendall(buf)
        counter.bytes += size
        calls += 1
        if now() >= deadline or (not calls % CHECK_EVERY and stop.is_set()):
            break
    counter.calls = calls


def _send_bytes(
    sock: socket.socket, buf: memoryview, counter: Counter, *, nbytes: int, stop: threading.Event
) -> None:
    sendall, size = sock.sendall, len(buf)
    left, calls = nbytes, 0
    while left >= size:
        sendall(buf)
        counter.bytes += size
        left -= size
        calls += 1
        if not calls % CHECK_EVERY and stop.is_set():
            counter.calls = calls
            return
    if left:
        sendall(buf[:left])
        counter.bytes += left
        calls += 1
    counter.calls = calls


def _send_zerocopy(
    sock: socket.socket, buf: memoryview, counter: Counter, *, limit: Limit, stats: ZeroCopyStats
) -> None:
    """MSG_ZEROCOPY sends, reading completions from the error queue as they come."""
    deadline = None if limit.seconds is None else time.monotonic_ns() + int(limit.seconds * 1e9)
    left = limit.nbytes
    size = len(buf)
    while not limit.stop.is_set():
        if left is not None:
            if left <= 0:
                break
            chunk = buf if left >= size else buf[:left]
            left -= len(chunk)
        else:
            chunk = buf
        while chunk:  # each sendmsg is one zerocopy notification: count calls, not chunks
            sent = sock.send(chunk, MSG_ZEROCOPY)
            chunk = chunk[sent:]
            counter.bytes += sent
            counter.calls += 1
            stats.sends += 1
        if stats.sends - stats.completed > 64:
            _drain_completions(sock, stats)
        if deadline is not None and time.monotonic_ns() >= deadline:
            break
    _wait_completions(sock, stats)


def _wait_completions(sock: socket.socket, stats: ZeroCopyStats, timeout: float = 5.0) -> None:
    """Read notifications until every send is accounted for, then once more a moment
    later for a last part of a send still on its way."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        _drain_completions(sock, stats)
        if stats.all_completed:
            time.sleep(0.02)
            _drain_completions(sock, stats)
            if stats.all_completed:
                return
        time.sleep(0.001)


def recv_loop(sock: socket.socket, buf: memoryview, counter: Counter) -> None:
    """Receive into ``buf`` until the peer shuts down writing, or the counter reaches
    ``until`` (what the peer says it sent: behind a mux its half-close is lost), or
    the connection breaks.

    The last byte's time is taken at the end of the stream: the sender shuts
    down right after its last byte, so the difference is one wakeup.
    """
    recv_into, now = sock.recv_into, time.monotonic_ns
    calls = 0
    try:
        n = recv_into(buf)
        counter.first_ns = now()
        while n:
            counter.bytes += n
            calls += 1
            if counter.bytes >= counter.until:
                break
            n = recv_into(buf)
    except OSError as exc:
        counter.fail(exc)
    finally:  # Ctrl-C too, when the loop runs on the main thread
        if counter.first_ns:
            counter.last_ns = now()
        counter.calls = calls


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "error")
    return f"{exc.strerror or exc} ({name})"


class IntervalSampler:
    """Every ``interval`` seconds, how far each counter got: the per-interval report."""

    def __init__(
        self,
        sent: list[Counter],
        received: list[Counter],
        interval: float,
        on_interval: Callable[[Interval], None] | None = None,
    ) -> None:
        self.counters = {"sent": sent, "received": received}
        self.interval = interval
        self.intervals: list[Interval] = []
        self._on_interval = on_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[str, list[int]] = {}
        self._start_ns = 0
        self._last_ns = 0

    def start(self) -> None:
        self._start_ns = self._last_ns = time.monotonic_ns()
        self._last = {k: [0] * len(v) for k, v in self.counters.items()}
        if self.interval > 0:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def _counts(self, direction: str) -> Counts:
        current = [c.bytes for c in self.counters[direction]]
        deltas = [a - b for a, b in zip(current, self._last[direction], strict=True)]
        self._last[direction] = current
        return {"bytes": sum(deltas), "streams": deltas}

    def sample(self) -> Interval | None:
        now = time.monotonic_ns()
        if now <= self._last_ns:
            return None
        start_ns, end_ns = self._last_ns - self._start_ns, now - self._start_ns
        record: Interval = {
            "start_ns": start_ns,
            "end_ns": end_ns,
            "start": start_ns / 1e9,
            "end": end_ns / 1e9,
            "sent": self._counts("sent"),
            "received": self._counts("received"),
        }
        self._last_ns = now
        self.intervals.append(record)
        if self._on_interval is not None:
            self._on_interval(record)
        return record

    def finish(self) -> None:
        """Stop sampling; the last (partial) interval takes what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.interval > 0:
            record = self.sample()
            if record is not None and not (record["sent"]["bytes"] or record["received"]["bytes"]):
                self.intervals.pop()
