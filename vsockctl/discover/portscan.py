"""Does something accept on these ports? (netcat's ``-z``, for vsock.)

Each port gets one connection attempt, closed at once, with a per-port
timeout; a bounded pool keeps a range quick without flooding the peer.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from vsockctl.errors import ProtocolError, VsockError, explain
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.route import Route
from vsockctl.vsock.sockets import SocketFactory, SocketType


@dataclass
class ProbeResult:
    cid: int
    port: int
    open: bool
    elapsed_ns: int
    errno: int | None = None
    errno_name: str | None = None
    meaning: str | None = None
    shown: str | None = None  # how to print the address, when not CID:port (hybrid vsock)

    @property
    def label(self) -> str:
        return self.shown or str(self.address)

    @property
    def address(self) -> VsockAddress:
        return VsockAddress(self.cid, self.port)


def probe_one(
    route: Route,
    *,
    sock_type: SocketType = SocketType.STREAM,
    timeout: float = 2.0,
    factory: SocketFactory = socket.socket,
) -> ProbeResult:
    """One connection attempt along ``route``, closed at once."""
    address = route.address
    shown = None if route.uds is None else str(route.shown)
    started = time.monotonic_ns()
    try:
        route.connect(sock_type, timeout, factory=factory).close()
    except VsockError as exc:
        meaning = explain(exc.errno if exc.errno is not None else 0)
        elapsed = time.monotonic_ns() - started
        return ProbeResult(
            address.cid,
            address.port,
            False,
            elapsed,
            exc.errno,
            meaning.name,
            meaning.cause,
            shown,
        )
    except ProtocolError as exc:  # hybrid vsock: the VMM answered something else than OK
        elapsed = time.monotonic_ns() - started
        return ProbeResult(
            address.cid, address.port, False, elapsed, errno.EPROTO, "EPROTO", str(exc), shown
        )
    elapsed = time.monotonic_ns() - started
    return ProbeResult(address.cid, address.port, True, elapsed, shown=shown)


def probe_with_retry(
    route: Route,
    ports: Sequence[int],
    *,
    sock_type: SocketType = SocketType.STREAM,
    timeout: float = 2.0,
    concurrency: int = 16,
    retries: int = 0,
    retry_delay: float = 1.0,
    factory: SocketFactory = socket.socket,
) -> list[ProbeResult]:
    """Probe ``ports``, then try the ones that did not accept up to ``retries`` more times.

    For waiting on a guest that is still booting: a port counts as open as soon
    as one attempt succeeds; the others keep the result of their last attempt.
    Results are in port order.
    """

    def probe(port: int) -> ProbeResult:
        return probe_one(
            route.with_port(port), sock_type=sock_type, timeout=timeout, factory=factory
        )

    results: dict[int, ProbeResult] = {}
    pending = list(ports)
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(ports) or 1))) as pool:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(retry_delay)
            for result in pool.map(probe, pending):  # ``concurrency`` ports at a time
                results[result.port] = result
            pending = [port for port in pending if not results[port].open]
            if not pending:
                break
    return [results[port] for port in ports]
