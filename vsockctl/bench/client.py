"""The client end of a throughput test, and the report it makes of both ends' results."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from contextlib import ExitStack
from typing import cast

from vsockctl.errors import Operation, ProtocolError, VsockError
from vsockctl.events.throughput import DirectionTotals, Start, Summary, TestMode
from vsockctl.vsock.route import Route
from vsockctl.vsock.sockets import SocketFactory, SocketType

from .measure import EndResult, Measurement, OnInterval, data_socket_options, ignore, prepare_stream
from .peer import PeerResult
from .protocol import FrameKind, recv_frame, send_frame
from .server import CONTROL_TIMEOUT
from .spec import TestSpec


class ClientError(Exception):
    """A test that ended early, with what was measured up to then."""

    def __init__(self, cause: BaseException, partial: Summary | None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.partial = partial


def run_client(
    route: Route,
    spec: TestSpec,
    *,
    factory: SocketFactory = socket.socket,
    timeout: float = 5.0,
    retries: int = 0,
    retry_delay: float = 1.0,
    on_interval: OnInterval = ignore,
    on_event: Callable[[Start], None] = ignore,
) -> Summary:
    """Run one test against the server at the end of ``route``; its summary.

    The control connection is tried ``retries`` more times while nothing
    listens (a server still starting); the connection that succeeds carries
    the test, so a ``--once`` server is not used up. Raises ClientError (with
    partial results when there are any) when the server refuses, vanishes, or
    the user interrupts.
    """
    spec.check()
    sock_type = SocketType(spec.sock_type)
    data_factory = data_socket_options(spec).factory(factory, ignore)
    where = route.shown

    with ExitStack() as stack:
        control = stack.enter_context(
            route.connect(
                SocketType.STREAM,
                timeout,
                retries=retries,
                retry_delay=retry_delay,
                factory=factory,
            )
        )
        control.settimeout(CONTROL_TIMEOUT)
        send_frame(control, FrameKind.TEST, spec.to_record())
        _, accepted = recv_frame(control, FrameKind.ACCEPT)
        test_id, data_port = accepted["test"], accepted["data_port"]
        data_route = route.with_port(data_port)
        socks = []
        for index in range(spec.parallel):
            sock = stack.enter_context(data_route.connect(sock_type, timeout, factory=data_factory))
            send_frame(sock, FrameKind.STREAM, {"test": test_id, "stream": index})
            prepare_stream(sock, spec, client=True)
            socks.append(sock)
        control.settimeout(CONTROL_TIMEOUT)
        recv_frame(control, FrameKind.START)
        peer = PeerResult(control)
        measurement = Measurement(socks, spec, client=True, peer=peer, on_interval=on_interval)
        on_event(
            Start(
                event="start",
                test=test_id,
                data_port=data_port,
                buffers=measurement.buffers,
                **spec.to_record(),
            )
        )
        try:
            ours = measurement.run()
        except KeyboardInterrupt as exc:
            assert measurement.partial is not None  # run() keeps what it measured
            raise ClientError(exc, summarise(spec, measurement.partial, None)) from exc
        streams = measurement.streams
        failed = next((c for c in streams.sent + streams.received if c.errno), None)
        try:
            wait = CONTROL_TIMEOUT + (spec.seconds or 0)
            control.settimeout(wait)
            send_frame(control, FrameKind.RESULT, ours)
            theirs = cast(EndResult, peer.result(wait))  # the same vsockctl version measured it
        except (OSError, EOFError, ProtocolError) as exc:
            cause: BaseException = exc
            if failed is not None and failed.errno is not None:
                cause = VsockError(failed.errno, Operation.THROUGHPUT, where)
            elif isinstance(exc, EOFError | BrokenPipeError | ConnectionResetError):
                cause = VsockError(
                    errno.ECONNRESET, Operation.THROUGHPUT, where, "the server went away mid-test"
                )
            elif isinstance(exc, OSError):
                cause = VsockError.wrap(exc, Operation.THROUGHPUT, where)
            raise ClientError(cause, summarise(spec, ours, None)) from exc
        summary = summarise(spec, ours, theirs)
        if failed is not None and failed.errno is not None:
            raise ClientError(VsockError(failed.errno, Operation.THROUGHPUT, where), summary)
        return summary


def summarise(spec: TestSpec, client: EndResult, server: EndResult | None) -> Summary:
    """The report: per direction, the receiver's goodput (the headline) and the sender's."""
    directions: list[DirectionTotals] = []
    if spec.mode is TestMode.THROUGHPUT:
        if spec.direction.client_sends:
            directions.append(
                {
                    "direction": "client-to-server",
                    "sender": client["sent"],
                    "receiver": server and server["received"],
                }
            )
        if spec.direction.server_sends:
            directions.append(
                {
                    "direction": "server-to-client",
                    "sender": server and server["sent"],
                    "receiver": client["received"],
                }
            )
    errors = list(client["sent"]["errors"]) + list(client["received"]["errors"])
    if server is not None:
        errors += list(server["sent"]["errors"]) + list(server["received"]["errors"])
    summary: Summary = {
        "event": "summary",
        "complete": server is not None,
        "test": spec.to_record(),
        "directions": directions,
        "cpu": {"client": client["cpu"], "server": server and server["cpu"]},
        "buffers": {"client": client["buffers"], "server": server and server["buffers"]},
        "intervals": client["intervals"],
        "server_intervals": server["intervals"] if server else [],
        "errors": errors,
    }
    if "latency" in client:
        seconds = client["sent"]["seconds"]
        summary["latency"] = {
            **client["latency"],
            "msg_size": spec.msg_size,
            "round_trips_per_second": client["latency"]["round_trips"] / seconds
            if seconds
            else 0.0,
        }
    if "zerocopy" in client:
        summary["zerocopy"] = client["zerocopy"]
    return summary
