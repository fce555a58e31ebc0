"""The client end of a throughput test, and the report it makes of both ends' results."""

from __future__ import annotations

import errno
import socket
from contextlib import ExitStack
from typing import Any

from vsockctl.errors import ProtocolError, VsockError
from vsockctl.vsock.route import Route
from vsockctl.vsock.sockets import SocketFactory, SocketType
from vsockctl.vsock.sockopt_apply import configured
from vsockctl.vsock.sockopts import parse_setting

from .measure import Event, Measurement, buffer_settings, ignore, prepare_stream
from .protocol import FrameKind, recv_frame, send_frame
from .server import CONTROL_TIMEOUT
from .spec import TestSpec


class ClientError(Exception):
    """A test that ended early, with what was measured up to then."""

    def __init__(self, cause: BaseException, partial: dict[str, Any] | None) -> None:
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
    on_interval: Event = ignore,
    on_event: Event = ignore,
) -> dict[str, Any]:
    """Run one test against the server at the end of ``route``; the summary as a dictionary.

    The control connection is tried ``retries`` more times while nothing
    listens (a server still starting); the connection that succeeds carries
    the test, so a ``--once`` server is not used up. Raises ClientError (with
    partial results when there are any) when the server refuses, vanishes, or
    the user interrupts.
    """
    spec.check()
    sock_type = SocketType(spec.sock_type)
    settings = [parse_setting(s) for s in buffer_settings(spec)]
    data_factory = configured(factory, settings, lambda applied: None)
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
        send_frame(control, FrameKind.TEST, spec.to_dict())
        _, accepted = recv_frame(control, FrameKind.ACCEPT)
        test_id, data_port = accepted["test"], accepted["data_port"]
        data_route = route.with_port(data_port)
        socks = []
        for index in range(spec.parallel):
            sock = stack.enter_context(data_route.connect(sock_type, timeout, factory=data_factory))
            send_frame(sock, FrameKind.STREAM, {"test": test_id, "stream": index})
            prepare_stream(sock, spec, sending=spec.direction != "reverse")
            socks.append(sock)
        control.settimeout(CONTROL_TIMEOUT)
        recv_frame(control, FrameKind.START)
        measurement = Measurement(
            socks,
            spec,
            sending=spec.direction in ("send", "bidir"),
            receiving=spec.direction in ("reverse", "bidir"),
            client=True,
            on_interval=on_interval,
        )
        on_event(
            {
                "event": "start",
                "test": test_id,
                "data_port": data_port,
                "buffers": measurement.buffers,
                **spec.to_dict(),
            }
        )
        try:
            ours = measurement.run()
        except KeyboardInterrupt as exc:
            assert measurement.partial is not None  # run() keeps what it measured
            raise ClientError(exc, summarise(spec, measurement.partial, None)) from exc
        streams = measurement.streams
        failed = next((c for c in streams.sent + streams.received if c.errno), None)
        try:
            control.settimeout(CONTROL_TIMEOUT + (spec.seconds or 0))
            send_frame(control, FrameKind.RESULT, ours)
            _, theirs = recv_frame(control, FrameKind.RESULT)
        except (OSError, EOFError, ProtocolError) as exc:
            cause: BaseException = exc
            if failed is not None and failed.errno is not None:
                cause = VsockError(failed.errno, "throughput", where)
            elif isinstance(exc, EOFError):
                cause = VsockError(
                    errno.ECONNRESET, "throughput", where, "the server went away mid-test"
                )
            raise ClientError(cause, summarise(spec, ours, None)) from exc
        summary = summarise(spec, ours, theirs)
        if failed is not None and failed.errno is not None:
            raise ClientError(VsockError(failed.errno, "throughput", where), summary)
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
