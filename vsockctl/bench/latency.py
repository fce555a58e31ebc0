"""The latency loops of a throughput test: ping-pong one message, time each round trip.

The client's :func:`ping_loop` folds its samples into a :class:`Histogram`
(flat memory, percentiles within 1%); the server's :func:`echo_loop` sends
each message back.
"""

from __future__ import annotations

import math
import socket
import time
from array import array
from collections.abc import Callable

from vsockctl.events.throughput import Latency

from .pumps import Counter, Limit


class Histogram:
    """Round-trip times: raw samples while the test runs, logarithmic buckets (1% wide) after.

    Appending to an ``array`` is all the hot loop does; samples fold into the
    buckets when ``SAMPLES`` are held (or at the end), so memory stays flat
    however long the run and percentiles are within 1%.
    """

    BASE = 1.01
    SAMPLES = 1 << 20  # 8 MiB of samples at most

    def __init__(self) -> None:
        self.samples = array("q")
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total_ns = 0
        self.min_ns = 0
        self.max_ns = 0
        self._log_base = math.log(self.BASE)

    def add(self, ns: int) -> None:
        self.samples.append(ns)
        if len(self.samples) >= self.SAMPLES:
            self.fold()

    def fold(self) -> None:
        """Move the held samples into the buckets."""
        if not self.samples:
            return
        log, base, buckets = math.log, self._log_base, self.buckets
        for ns in self.samples:
            index = int(log(max(ns, 1)) / base)
            buckets[index] = buckets.get(index, 0) + 1
        low, high = min(self.samples), max(self.samples)
        self.min_ns = low if not self.count else min(low, self.min_ns)
        self.max_ns = max(high, self.max_ns)
        self.count += len(self.samples)
        self.total_ns += sum(self.samples)
        del self.samples[:]

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile in ns (the upper edge of its bucket, within min..max)."""
        self.fold()
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(self.count * p / 100))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return float(min(max(self.BASE ** (index + 1), self.min_ns), self.max_ns))
        return float(self.max_ns)

    def summary(self) -> Latency:
        self.fold()
        if not self.count:
            return {"round_trips": 0}
        mean, p50, p90, p99 = (
            self.total_ns / self.count,
            self.percentile(50),
            self.percentile(90),
            self.percentile(99),
        )
        return {
            "round_trips": self.count,
            "mean_ns": round(mean),
            "min_ns": self.min_ns,
            "p50_ns": round(p50),
            "p90_ns": round(p90),
            "p99_ns": round(p99),
            "max_ns": self.max_ns,
            # microseconds, kept for older scripts
            "mean_us": mean / 1e3,
            "min_us": self.min_ns / 1e3,
            "p50_us": p50 / 1e3,
            "p90_us": p90 / 1e3,
            "p99_us": p99 / 1e3,
            "max_us": self.max_ns / 1e3,
        }


def _fill(recv_into: Callable[..., int], view: memoryview, got: int, size: int) -> int:
    """Receive the rest of a message after a short read; 0 when the peer closed."""
    while got < size:
        n = recv_into(view[got:])
        if not n:
            return 0
        got += n
    return got


def ping_loop(
    sock: socket.socket, size: int, *, limit: Limit, histogram: Histogram, counter: Counter
) -> None:
    """Send ``size`` bytes, wait for them to come back, time it; until the limit.

    The loop is kept to the bare minimum per round trip (the figure is the
    round trips a second): one read normally brings the whole message back.
    """
    out = bytes(b"\x5a" * size)
    view = memoryview(bytearray(size))
    now, sendall, recv_into = time.monotonic_ns, sock.sendall, sock.recv_into
    append, stop = histogram.samples.append, limit.stop  # Histogram.add, inlined
    rounds = -1 if limit.nbytes is None else max(1, -(-limit.nbytes // size))
    count = 0
    counter.first_ns = started = now()
    deadline = started + int(limit.seconds * 1e9) if limit.seconds is not None else 1 << 62
    try:
        while True:
            started = now()
            sendall(out)
            got = recv_into(view)
            if got < size and not _fill(recv_into, view, got, size):
                counter.error = "the server closed the connection"
                break
            ended = now()
            append(ended - started)
            counter.bytes += size
            count += 1
            if ended >= deadline or count == rounds:
                break
            if not count & 0xFFFF:  # now and then: Ctrl-C, and flat memory
                if stop.is_set():
                    break
                histogram.fold()
        counter.last_ns = now()
        counter.calls = count
        sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        counter.last_ns = now()
        counter.fail(exc)


def echo_loop(sock: socket.socket, size: int, counter: Counter) -> None:
    """The server's side of :func:`ping_loop`: send each ``size``-byte message back,
    until the client's half-close or its count (``until``) of messages sent."""
    view = memoryview(bytearray(size))
    sendall, recv_into = sock.sendall, sock.recv_into
    counter.first_ns = time.monotonic_ns()
    try:
        while True:
            got = recv_into(view)
            if not got or (got < size and not _fill(recv_into, view, got, size)):
                break
            sendall(view)
            counter.bytes += size
            if counter.bytes >= counter.until:
                break
        counter.last_ns = time.monotonic_ns()
        counter.calls = counter.bytes // size
    except OSError as exc:
        counter.fail(exc)
