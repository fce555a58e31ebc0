"""The server end of a throughput test: serves one client after another, until stopped.

A bad client only loses its own test: garbage, a wrong version, a client
that vanishes are refused or reported, and the next client is served.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
from collections.abc import Callable
from contextlib import ExitStack

from vsockctl.errors import ProtocolError
from vsockctl.events.throughput import Refused, ServerRecord, Test, TestDone, TestFailed
from vsockctl.vsock.address import Endpoint
from vsockctl.vsock.constants import VMADDR_PORT_ANY
from vsockctl.vsock.route import Route
from vsockctl.vsock.sockets import SocketFactory, SocketType, accept, local_address

from . import protocol
from .measure import EndResult, Measurement, data_socket_options, ignore, prepare_stream
from .peer import PeerResult
from .protocol import FrameKind, recv_frame, send_frame
from .spec import TestSpec

CONTROL_TIMEOUT = 30.0  # a loaded, emulated machine (CI) has stalled a peer past 10 s


class ThroughputServer:
    """Serves tests one client after another, until stopped; a bad client only loses its test."""

    def __init__(
        self,
        sock: socket.socket,
        route: Route,
        factory: SocketFactory = socket.socket,
        on_event: Callable[[ServerRecord], None] = ignore,
    ) -> None:
        """Serve on the listening ``sock``, which waits on ``route``; each test gets a
        data listener on the same route, on a port nobody uses yet."""
        self.sock = sock
        self.data_route = route.with_port(VMADDR_PORT_ANY)
        self.factory = factory
        self.on_event = on_event
        self._ids = itertools.count(1)

    def serve(self, count: int | None = None) -> None:
        """Serve ``count`` tests (forever when None)."""
        served = 0
        while count is None or served < count:
            control, peer = accept(self.sock)
            with control:
                self.serve_one(control, peer)
            served += 1

    def serve_one(self, control: socket.socket, peer: Endpoint) -> EndResult | None:
        test_id = next(self._ids)
        control.settimeout(CONTROL_TIMEOUT)
        try:
            _, payload = recv_frame(control, FrameKind.TEST)
            spec = TestSpec.from_dict(payload)
        except (ProtocolError, EOFError, OSError) as exc:
            self._refuse(control, peer, exc)
            return None
        self.on_event(Test(event="test", test=test_id, peer=str(peer), **spec.to_record()))
        try:
            return self._run(control, peer, spec, test_id)
        except (ProtocolError, EOFError, OSError) as exc:
            self.on_event(
                TestFailed(event="test_failed", test=test_id, peer=str(peer), error=str(exc))
            )
            return None

    def _refuse(self, control: socket.socket, peer: Endpoint, exc: BaseException) -> None:
        reason = str(exc)
        self.on_event(Refused(event="refused", peer=str(peer), error=reason))
        with contextlib.suppress(OSError):
            send_frame(control, FrameKind.REFUSE, {"error": reason})

    def _run(
        self, control: socket.socket, peer: Endpoint, spec: TestSpec, test_id: int
    ) -> EndResult:
        sock_type = SocketType(spec.sock_type)
        factory = data_socket_options(spec).factory(self.factory, ignore)
        with ExitStack() as stack:
            data = stack.enter_context(self.data_route.listen(sock_type, spec.parallel, factory))
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
            socks: dict[int, socket.socket] = {}
            for index in range(spec.parallel):
                conn, _ = accept(data)
                stack.enter_context(conn)
                conn.settimeout(CONTROL_TIMEOUT)
                _, hello = recv_frame(
                    conn, FrameKind.STREAM, message=sock_type is SocketType.SEQPACKET
                )
                stream = hello.get("stream")
                if hello.get("test") != test_id:
                    raise ProtocolError(f"data connection {index} belongs to another test")
                if type(stream) is not int or stream not in range(spec.parallel) or stream in socks:
                    raise ProtocolError(f"data connection {index} says it is stream {stream!r}")
                conn.settimeout(None)
                prepare_stream(conn, spec, client=False)
                socks[stream] = conn
            theirs = PeerResult(control)
            measurement = Measurement(
                [socks[i] for i in sorted(socks)], spec, client=False, peer=theirs
            )
            send_frame(control, FrameKind.START, {"test": test_id})
            result = measurement.run()
            wait = CONTROL_TIMEOUT + (spec.seconds or 0)
            control.settimeout(wait)
            send_frame(control, FrameKind.RESULT, result)
            with contextlib.suppress(EOFError):
                theirs.result(wait)
        self.on_event(
            TestDone(
                event="test_done",
                test=test_id,
                peer=str(peer),
                received_bytes=result["received"]["bytes"],
                sent_bytes=result["sent"]["bytes"],
            )
        )
        return result
