"""What both ends of a throughput test do alike: open the loops, time them, add them up.

The server (:mod:`.server`) and the client (:mod:`.client`) differ in how
they agree on a test; once their data connections are up, each runs one
:class:`Measurement` over them and exchanges its result.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import NotRequired, TypedDict

from vsockctl.errors import VsockError
from vsockctl.events.throughput import Buffers, Cpu, Interval, Latency, Totals, Zerocopy
from vsockctl.vsock.sockopt_apply import SocketOptions, get_option
from vsockctl.vsock.sockopts import buffer_settings, lookup

from .latency import Histogram, echo_loop, ping_loop
from .peer import PeerResult
from .pumps import (
    Counter,
    IntervalSampler,
    Limit,
    ZeroCopyStats,
    enable_zerocopy,
    recv_loop,
    send_loop,
)
from .spec import TestSpec

OnInterval = Callable[[Interval], None]


def ignore(record: object) -> None:
    """A callback for records that shows nothing."""


class EndResult(TypedDict):
    """One end's measurement, as it crosses the control connection in a RESULT frame."""

    sent: Totals
    received: Totals
    intervals: list[Interval]
    cpu: Cpu
    buffers: Buffers
    zerocopy: NotRequired[Zerocopy]
    latency: NotRequired[Latency]


class CpuClock:
    """User and system CPU seconds of this process over a stretch of wall time."""

    def __init__(self) -> None:
        import psutil  # imported on first use: it is slow to load

        self._process = psutil.Process()
        times = self._process.cpu_times()
        self._user, self._system = times.user, times.system
        self._wall = time.monotonic()

    def read(self) -> Cpu:
        times = self._process.cpu_times()
        wall = max(time.monotonic() - self._wall, 1e-9)
        user, system = times.user - self._user, times.system - self._system
        return {
            "user_ns": round(user * 1e9),
            "system_ns": round(system * 1e9),
            "wall_ns": round(wall * 1e9),
            "user_seconds": user,  # the *_seconds keys are kept for scripts that read them
            "system_seconds": system,
            "wall_seconds": wall,
            "percent": 100.0 * (user + system) / wall,
        }


def data_socket_options(spec: TestSpec) -> SocketOptions:
    """The data sockets' options: the vsock buffer both ends agreed on, if any."""
    if spec.vsock_buffer_size is None:
        return SocketOptions()
    return SocketOptions(buffer_settings(spec.vsock_buffer_size))


def effective_buffers(sock: socket.socket) -> Buffers:
    result: Buffers = {}
    for name in ("buffer-size", "buffer-max-size", "rcvlowat"):
        try:
            result[name] = int(get_option(sock, lookup(name)))
        except VsockError as exc:
            result[name] = exc.meaning.name
    return result


def sends(spec: TestSpec, *, client: bool) -> bool:
    """Whether the client (or the server) sends in this test."""
    return spec.direction.client_sends if client else spec.direction.server_sends


def prepare_stream(sock: socket.socket, spec: TestSpec, *, client: bool) -> None:
    if spec.rcvlowat is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, spec.rcvlowat)
    if spec.zerocopy and sends(spec, client=client):
        enable_zerocopy(sock)


@dataclass
class DataStreams:
    """The data connections of one end and its counters per direction."""

    socks: list[socket.socket]
    sent: list[Counter] = field(default_factory=list)
    received: list[Counter] = field(default_factory=list)
    zerocopy: list[ZeroCopyStats] | None = None  # one per sending socket
    histogram: Histogram | None = None
    threads: list[threading.Thread] = field(default_factory=list)
    targets: list[Callable[[], None]] = field(default_factory=list)

    def run(
        self, spec: TestSpec, *, sending: bool, receiving: bool, client: bool, limit: Limit
    ) -> None:
        """Prepare a loop per stream and direction; :meth:`wait` runs them."""
        buf = memoryview(bytearray(b"\xa5" * spec.buf_size))
        if spec.zerocopy and sending:
            self.zerocopy = []
        for sock in self.socks:
            if spec.mode == "latency":
                counter = Counter()
                if client:
                    self.histogram = Histogram()
                    self.sent.append(counter)
                    self._start(
                        partial(
                            ping_loop,
                            sock,
                            spec.msg_size,
                            limit=limit,
                            histogram=self.histogram,
                            counter=counter,
                        )
                    )
                else:
                    self.received.append(counter)
                    self._start(partial(echo_loop, sock, spec.msg_size, counter))
                continue
            if sending:
                counter = Counter()
                self.sent.append(counter)
                zerocopy = None
                if self.zerocopy is not None:
                    zerocopy = ZeroCopyStats()
                    self.zerocopy.append(zerocopy)
                self._start(partial(send_loop, sock, buf, counter, limit, zerocopy=zerocopy))
            if receiving:
                counter = Counter()
                self.received.append(counter)
                rbuf = memoryview(bytearray(spec.buf_size))
                self._start(partial(recv_loop, sock, rbuf, counter))

    def _start(self, target: Callable[[], None]) -> None:
        self.targets.append(target)

    def wait(self) -> None:
        """Run the loops: one stream in one direction runs right here (no thread to hand
        the GIL to and fro, as in a bare loop); several run a thread each, joined in
        small steps so Ctrl-C reaches this thread."""
        if len(self.targets) == 1:
            self.targets[0]()
            return
        for target in self.targets:
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self.threads.append(thread)
        for thread in self.threads:
            while thread.is_alive():
                thread.join(0.1)

    def abort(self) -> None:
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def direction_totals(counters: list[Counter]) -> Totals:
    """Bytes, seconds and rate over all streams of one direction at one end."""
    active = [c for c in counters if c.first_ns]
    total = sum(c.bytes for c in counters)
    elapsed_ns = max(c.last_ns for c in active) - min(c.first_ns for c in active) if active else 0
    rate = total * 1e9 / elapsed_ns if elapsed_ns > 0 else 0.0
    return {
        "bytes": total,
        "elapsed_ns": elapsed_ns,
        "seconds": elapsed_ns / 1e9,
        "bytes_per_second": rate,
        "bits_per_second": rate * 8,
        "streams": [c.to_record() for c in counters],
        "errors": [c.error for c in counters if c.error],
    }


def end_result(
    streams: DataStreams, sampler: IntervalSampler, cpu: Cpu, buffers: Buffers
) -> EndResult:
    result: EndResult = {
        "sent": direction_totals(streams.sent),
        "received": direction_totals(streams.received),
        "intervals": sampler.intervals,
        "cpu": cpu,
        "buffers": buffers,
    }
    if streams.zerocopy is not None:
        z = ZeroCopyStats()
        for one in streams.zerocopy:
            z.add(one)
        result["zerocopy"] = {
            "sends": z.sends,
            "completed": z.completed,
            "ids": z.ids,
            "copied": z.copied,
            "all_completed": all(one.all_completed for one in streams.zerocopy),
        }
    if streams.histogram is not None:
        result["latency"] = streams.histogram.summary()
    return result


class Measurement:
    """One end's share of a test over its connected ``socks``: the measurement
    sequence, written once for server and client.

    Made before the data flows (it reads the effective buffers and starts the
    CPU clock); :meth:`run` runs the loops and returns this end's result. When
    the loops are cut short (Ctrl-C, a stop signal), :attr:`partial` holds what
    was measured up to then.
    """

    def __init__(
        self,
        socks: list[socket.socket],
        spec: TestSpec,
        *,
        client: bool,
        peer: PeerResult,
        on_interval: OnInterval = ignore,
    ) -> None:
        self.spec = spec
        self.peer = peer
        self.sending = sends(spec, client=client)
        self.receiving = sends(spec, client=not client)
        self.client = client
        self.streams = DataStreams(socks)
        self.buffers = effective_buffers(socks[0])
        self.sampler = IntervalSampler(
            self.streams.sent, self.streams.received, spec.interval, on_interval
        )
        per_stream = None if spec.nbytes is None else spec.nbytes // spec.parallel
        self.limit = Limit(spec.seconds, per_stream)
        self.cpu = CpuClock()
        self.partial: EndResult | None = None

    def run(self) -> EndResult:
        self.streams.run(
            self.spec,
            sending=self.sending,
            receiving=self.receiving,
            client=self.client,
            limit=self.limit,
        )
        self.peer.watch(list(zip(self.streams.socks, self.streams.received, strict=False)))
        self.sampler.start()
        try:
            self.streams.wait()
        except BaseException:
            self.peer.stop()
            self.limit.stop.set()
            self.streams.abort()
            self.sampler.finish()
            self.partial = self._result()
            raise
        self.sampler.finish()
        return self._result()

    def _result(self) -> EndResult:
        return end_result(self.streams, self.sampler, self.cpu.read(), self.buffers)
