"""Both ends of a throughput test: the server that serves one client after another, and the client.

The CLI gives each end callbacks for what to show (events, intervals); the
ends return plain dictionaries that are the ``--json`` output and the source
of the human report.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import socket
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from vsockctl.address import Endpoint, VsockAddress
from vsockctl.constants import VMADDR_CID_ANY, VMADDR_PORT_ANY
from vsockctl.errors import ProtocolError, VsockError
from vsockctl.sockets import (
    Opener,
    SocketFactory,
    SocketType,
    accept,
    connect,
    connect_with_retry,
    listen,
    local_address,
)
from vsockctl.sockopts import configured, get_option, lookup, parse_setting

from . import protocol
from .protocol import FrameKind, recv_frame, send_frame
from .pumps import (
    Counter,
    Histogram,
    IntervalSampler,
    Limit,
    ZeroCopyStats,
    echo_loop,
    enable_zerocopy,
    ping_loop,
    recv_loop,
    send_loop,
)
from .spec import TestSpec

Event = Callable[[dict[str, Any]], None]
CONTROL_TIMEOUT = 10.0


def _ignore(record: dict[str, Any]) -> None:
    pass


class CpuClock:
    """User and system CPU seconds of this process over a stretch of wall time."""

    def __init__(self) -> None:
        import psutil  # imported on first use: it is slow to load

        self._process = psutil.Process()
        times = self._process.cpu_times()
        self._user, self._system = times.user, times.system
        self._wall = time.monotonic()

    def read(self) -> dict[str, float]:
        times = self._process.cpu_times()
        wall = max(time.monotonic() - self._wall, 1e-9)
        user, system = times.user - self._user, times.system - self._system
        return {
            "user_seconds": user,
            "system_seconds": system,
            "wall_seconds": wall,
            "percent": 100.0 * (user + system) / wall,
        }


def buffer_settings(spec: TestSpec) -> list[str]:
    settings = []
    if spec.vsock_buffer_size is not None:
        size = spec.vsock_buffer_size
        settings += [f"buffer-max-size={size}", f"buffer-size={size}"]
    return settings


def effective_buffers(sock: socket.socket) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name in ("buffer-size", "buffer-max-size", "rcvlowat"):
        try:
            result[name] = get_option(sock, lookup(name))
        except VsockError as exc:
            result[name] = exc.meaning.name
    return result


def _prepare_stream(sock: socket.socket, spec: TestSpec, sending: bool) -> None:
    if spec.rcvlowat is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, spec.rcvlowat)
    if spec.zerocopy and sending:
        enable_zerocopy(sock)


@dataclass
class DataStreams:
    """The data connections of one end and its counters per direction."""

    socks: list[socket.socket]
    sent: list[Counter] = field(default_factory=list)
    received: list[Counter] = field(default_factory=list)
    zerocopy: ZeroCopyStats | None = None
    histogram: Histogram | None = None
    threads: list[threading.Thread] = field(default_factory=list)
    targets: list[Callable[[], None]] = field(default_factory=list)

    def run(
        self, spec: TestSpec, sending: bool, receiving: bool, client: bool, limit: Limit
    ) -> None:
        """Prepare a loop per stream and direction; :meth:`wait` runs them."""
        buf = memoryview(bytearray(b"\xa5" * spec.buf_size))
        if spec.zerocopy and sending:
            self.zerocopy = ZeroCopyStats()
        for sock in self.socks:
            if spec.mode == "latency":
                counter = Counter()
                if client:
                    self.histogram = Histogram()
                    self.sent.append(counter)
                    self._start(
                        partial(ping_loop, sock, spec.msg_size, limit, self.histogram, counter)
                    )
                else:
                    self.received.append(counter)
                    self._start(partial(echo_loop, sock, spec.msg_size, counter))
                continue
            if sending:
                counter = Counter()
                self.sent.append(counter)
                self._start(partial(send_loop, sock, buf, counter, limit, self.zerocopy))
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

    def counters(self) -> dict[str, list[Counter]]:
        return {"sent": self.sent, "received": self.received}

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def direction_totals(counters: list[Counter]) -> dict[str, Any]:
    """Bytes, seconds and rate over all streams of one direction at one end."""
    active = [c for c in counters if c.first_ns]
    total = sum(c.bytes for c in counters)
    if active:
        seconds = (max(c.last_ns for c in active) - min(c.first_ns for c in active)) / 1e9
    else:
        seconds = 0.0
    rate = total / seconds if seconds > 0 else 0.0
    return {
        "bytes": total,
        "seconds": seconds,
        "bytes_per_second": rate,
        "bits_per_second": rate * 8,
        "streams": [
            {
                **c.to_dict(),
                "bits_per_second": c.bytes * 8e9 / c.elapsed_ns if c.elapsed_ns else 0.0,
            }
            for c in counters
        ],
        "errors": [c.error for c in counters if c.error],
    }


def end_result(
    streams: DataStreams, sampler: IntervalSampler, cpu: dict[str, float], buffers: dict[str, Any]
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "sent": direction_totals(streams.sent),
        "received": direction_totals(streams.received),
        "intervals": sampler.intervals,
        "cpu": cpu,
        "buffers": buffers,
    }
    if streams.zerocopy is not None:
        z = streams.zerocopy
        result["zerocopy"] = {"sends": z.sends, "completed": z.completed, "copied": z.copied}
    if streams.histogram is not None:
        result["latency"] = streams.histogram.summary()
    return result


DataListener = Callable[[SocketType, int, SocketFactory], AbstractContextManager[socket.socket]]


def vsock_data_listener(
    sock_type: SocketType, backlog: int, factory: SocketFactory
) -> AbstractContextManager[socket.socket]:
    """A test's data listener: vsock, any CID, a port the kernel picks."""
    return listen(
        VsockAddress(VMADDR_CID_ANY, VMADDR_PORT_ANY), sock_type, backlog, factory=factory
    )


class ThroughputServer:
    """Serves tests one client after another, until stopped; a bad client only loses its test."""

    def __init__(
        self,
        sock: socket.socket,
        factory: SocketFactory = socket.socket,
        on_event: Event = _ignore,
        data_listener: DataListener | None = None,
    ) -> None:
        """Serve on the listening ``sock``; ``data_listener`` makes each test's data listener
        (a vsock one on any port by default; hybrid vsock gives its own)."""
        self.sock = sock
        self.factory = factory
        self.on_event = on_event
        self.data_listener = data_listener or vsock_data_listener
        self._ids = itertools.count(1)

    @property
    def port(self) -> int:
        return local_address(self.sock).port

    def close(self) -> None:
        self.sock.close()

    def serve(self, count: int | None = None) -> None:
        """Serve ``count`` tests (forever when None)."""
        served = 0
        while count is None or served < count:
            control, peer = accept(self.sock)
            with control:
                self.serve_one(control, peer)
            served += 1

    def serve_one(self, control: socket.socket, peer: Endpoint) -> dict[str, Any] | None:
        test_id = next(self._ids)
        control.settimeout(CONTROL_TIMEOUT)
        try:
            _, payload = recv_frame(control, FrameKind.TEST)
            spec = TestSpec.from_dict(payload)
        except (ProtocolError, EOFError, OSError) as exc:
            self._refuse(control, peer, exc)
            return None
        self.on_event({"event": "test", "test": test_id, "peer": str(peer), **spec.to_dict()})
        try:
            return self._run(control, peer, spec, test_id)
        except (ProtocolError, EOFError, OSError) as exc:
            self.on_event(
                {"event": "test_failed", "test": test_id, "peer": str(peer), "error": str(exc)}
            )
            return None

    def _refuse(self, control: socket.socket, peer: Endpoint, exc: BaseException) -> None:
        reason = str(exc)
        self.on_event({"event": "refused", "peer": str(peer), "error": reason})
        with contextlib.suppress(OSError):
            send_frame(control, FrameKind.REFUSE, {"error": reason})

    def _run(
        self, control: socket.socket, peer: Endpoint, spec: TestSpec, test_id: int
    ) -> dict[str, Any]:
        sock_type = SocketType(spec.sock_type)
        settings = [parse_setting(s) for s in buffer_settings(spec)]
        factory = configured(self.factory, settings, lambda applied: None)
        with ExitStack() as stack:
            data = stack.enter_context(self.data_listener(sock_type, spec.parallel, factory))
            data.settimeout(CONTROL_TIMEOUT)
            send_frame(
                control,
                FrameKind.ACCEPT,
                {
                    "test": test_id,
                    "data_port": local_address(data).port,
                    "version": protocol.VERSION,
                },
            )
            socks = []
            for index in range(spec.parallel):
                conn, _ = accept(data)
                stack.enter_context(conn)
                conn.settimeout(CONTROL_TIMEOUT)
                _, hello = recv_frame(
                    conn, FrameKind.STREAM, message=sock_type is SocketType.SEQPACKET
                )
                if hello.get("test") != test_id:
                    raise ProtocolError(f"data connection {index} belongs to another test")
                conn.settimeout(None)
                _prepare_stream(conn, spec, sending=spec.direction != "send")
                socks.append(conn)
            streams = DataStreams(socks)
            buffers = effective_buffers(socks[0])
            sampler = IntervalSampler(streams.counters(), spec.interval)
            limit = Limit(
                spec.seconds, None if spec.nbytes is None else spec.nbytes // spec.parallel
            )
            cpu = CpuClock()
            send_frame(control, FrameKind.START, {"test": test_id})
            streams.run(
                spec,
                sending=spec.direction in ("reverse", "bidir"),
                receiving=spec.direction in ("send", "bidir") or spec.mode == "latency",
                client=False,
                limit=limit,
            )
            sampler.start()
            try:
                streams.wait()
            except BaseException:
                limit.stop.set()
                streams.abort()
                raise
            sampler.finish()
            result = end_result(streams, sampler, cpu.read(), buffers)
            control.settimeout(CONTROL_TIMEOUT + (spec.seconds or 0))
            send_frame(control, FrameKind.RESULT, result)
            with contextlib.suppress(EOFError):
                recv_frame(control, FrameKind.RESULT)
        self.on_event(
            {
                "event": "test_done",
                "test": test_id,
                "peer": str(peer),
                "received_bytes": result["received"]["bytes"],
                "sent_bytes": result["sent"]["bytes"],
            }
        )
        return result


class ClientError(Exception):
    """A test that ended early, with what was measured up to then."""

    def __init__(self, cause: BaseException, partial: dict[str, Any] | None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.partial = partial


def run_client(
    address: VsockAddress,
    spec: TestSpec,
    factory: SocketFactory = socket.socket,
    timeout: float = 5.0,
    on_interval: Event = _ignore,
    on_event: Event = _ignore,
    opener: Opener | None = None,
    *,
    retries: int = 0,
    retry_delay: float = 1.0,
) -> dict[str, Any]:
    """Run one test against the server at ``address``; the summary as a dictionary.

    ``opener`` opens the control and data connections instead of a vsock
    connect (hybrid vsock). The control connection is tried ``retries`` more
    times while nothing listens (a server still starting); the connection
    that succeeds carries the test, so a ``--once`` server is not used up.
    Raises ClientError (with partial results when there are any) when the
    server refuses, vanishes, or the user interrupts.
    """
    spec.check()
    sock_type = SocketType(spec.sock_type)
    settings = [parse_setting(s) for s in buffer_settings(spec)]
    data_factory = configured(factory, settings, lambda applied: None)

    def open_data(port: int) -> socket.socket:
        data_address = VsockAddress(address.cid, port, address.flags)
        if opener is not None:
            return opener(data_address, timeout)
        return connect(data_address, sock_type, timeout, factory=data_factory)

    with ExitStack() as stack:
        control = stack.enter_context(
            connect_with_retry(
                address,
                SocketType.STREAM,
                timeout,
                retries,
                retry_delay,
                factory=factory,
                opener=opener,
            )
        )
        control.settimeout(CONTROL_TIMEOUT)
        send_frame(control, FrameKind.TEST, spec.to_dict())
        _, accepted = recv_frame(control, FrameKind.ACCEPT)
        test_id, data_port = accepted["test"], accepted["data_port"]
        socks = []
        for index in range(spec.parallel):
            sock = stack.enter_context(open_data(data_port))
            send_frame(sock, FrameKind.STREAM, {"test": test_id, "stream": index})
            _prepare_stream(sock, spec, sending=spec.direction != "reverse")
            socks.append(sock)
        control.settimeout(CONTROL_TIMEOUT)
        recv_frame(control, FrameKind.START)
        streams = DataStreams(socks)
        buffers = effective_buffers(socks[0])
        on_event(
            {
                "event": "start",
                "test": test_id,
                "data_port": data_port,
                "buffers": buffers,
                **spec.to_dict(),
            }
        )
        sampler = IntervalSampler(streams.counters(), spec.interval, on_interval)
        limit = Limit(spec.seconds, None if spec.nbytes is None else spec.nbytes // spec.parallel)
        cpu = CpuClock()
        streams.run(
            spec,
            sending=spec.direction in ("send", "bidir"),
            receiving=spec.direction in ("reverse", "bidir"),
            client=True,
            limit=limit,
        )
        sampler.start()
        try:
            streams.wait()
        except KeyboardInterrupt as exc:
            limit.stop.set()
            streams.abort()
            sampler.finish()
            ours = end_result(streams, sampler, cpu.read(), buffers)
            raise ClientError(exc, summarise(spec, ours, None)) from exc
        sampler.finish()
        ours = end_result(streams, sampler, cpu.read(), buffers)
        failed = next((c for c in streams.sent + streams.received if c.errno), None)
        try:
            control.settimeout(CONTROL_TIMEOUT + (spec.seconds or 0))
            send_frame(control, FrameKind.RESULT, ours)
            _, theirs = recv_frame(control, FrameKind.RESULT)
        except (OSError, EOFError, ProtocolError) as exc:
            cause: BaseException = exc
            if failed is not None and failed.errno is not None:
                cause = VsockError(failed.errno, "throughput", address)
            elif isinstance(exc, EOFError):
                cause = VsockError(
                    errno.ECONNRESET, "throughput", address, "the server went away mid-test"
                )
            raise ClientError(cause, summarise(spec, ours, None)) from exc
        summary = summarise(spec, ours, theirs)
        if failed is not None and failed.errno is not None:
            raise ClientError(VsockError(failed.errno, "throughput", address), summary)
        return summary


def summarise(
    spec: TestSpec, client: dict[str, Any], server: dict[str, Any] | None
) -> dict[str, Any]:
    """The report: per direction, the receiver's goodput (the headline) and the sender's."""
    directions = []
    if spec.mode == "throughput":
        if spec.direction in ("send", "bidir"):
            directions.append(
                _direction("client-to-server", client["sent"], server and server["received"])
            )
        if spec.direction in ("reverse", "bidir"):
            directions.append(
                _direction("server-to-client", server and server["sent"], client["received"])
            )
    errors = list(client["sent"]["errors"]) + list(client["received"]["errors"])
    if server is not None:
        errors += list(server["sent"]["errors"]) + list(server["received"]["errors"])
    summary: dict[str, Any] = {
        "event": "summary",
        "complete": server is not None,
        "test": spec.to_dict(),
        "directions": directions,
        "cpu": {"client": client["cpu"], "server": server and server["cpu"]},
        "buffers": {"client": client["buffers"], "server": server and server["buffers"]},
        "intervals": client["intervals"],
        "server_intervals": server["intervals"] if server else [],
        "errors": errors,
    }
    if "latency" in client:
        summary["latency"] = client["latency"]
        summary["latency"]["msg_size"] = spec.msg_size
        seconds = client["sent"]["seconds"]
        summary["latency"]["round_trips_per_second"] = (
            client["latency"]["round_trips"] / seconds if seconds else 0.0
        )
    if "zerocopy" in client:
        summary["zerocopy"] = client["zerocopy"]
    return summary


def _direction(
    name: str, sender: dict[str, Any] | None, receiver: dict[str, Any] | None
) -> dict[str, Any]:
    return {"direction": name, "sender": sender, "receiver": receiver}
