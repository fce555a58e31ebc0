"""Does something accept on these ports? (netcat's ``-z``, for vsock.)

Each port gets one connection attempt, closed at once, with a per-port
timeout; a bounded pool keeps a range quick without flooding the peer.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from vsockctl.address import VsockAddress
from vsockctl.errors import ProtocolError, VsockError, explain
from vsockctl.sockets import Opener, SocketFactory, SocketType, connect


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
    address: VsockAddress,
    sock_type: SocketType = SocketType.STREAM,
    timeout: float = 2.0,
    factory: SocketFactory = socket.socket,
    opener: Opener | None = None,
) -> ProbeResult:
    started = time.monotonic_ns()
    try:
        if opener is not None:
            opener(address, timeout).close()
        else:
            connect(address, sock_type, timeout, factory=factory).close()
    except VsockError as exc:
        meaning = explain(exc.errno if exc.errno is not None else 0)
        return ProbeResult(
            address.cid,
            address.port,
            False,
            time.monotonic_ns() - started,
            exc.errno,
            meaning.name,
            meaning.cause,
        )
    except ProtocolError as exc:  # hybrid vsock: the VMM answered something else than OK
        elapsed = time.monotonic_ns() - started
        return ProbeResult(
            address.cid, address.port, False, elapsed, errno.EPROTO, "EPROTO", str(exc)
        )
    return ProbeResult(address.cid, address.port, True, time.monotonic_ns() - started)


def probe_ports(
    cid: int,
    ports: Sequence[int],
    sock_type: SocketType = SocketType.STREAM,
    timeout: float = 2.0,
    concurrency: int = 16,
    flags: int = 0,
    factory: SocketFactory = socket.socket,
    opener: Opener | None = None,
) -> Iterator[ProbeResult]:
    """Probe each port, ``concurrency`` at a time; results come in port order."""
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(ports) or 1))) as pool:
        yield from pool.map(
            lambda port: probe_one(
                VsockAddress(cid, port, flags), sock_type, timeout, factory, opener
            ),
            ports,
        )


def probe_with_retry(
    cid: int,
    ports: Sequence[int],
    sock_type: SocketType = SocketType.STREAM,
    timeout: float = 2.0,
    concurrency: int = 16,
    retry: int = 0,
    retry_delay: float = 1.0,
    factory: SocketFactory = socket.socket,
    flags: int = 0,
    opener: Opener | None = None,
) -> list[ProbeResult]:
    """Probe ``ports``, then try the ones that did not accept up to ``retry`` more times.

    For waiting on a guest that is still booting: a port counts as open as soon
    as one attempt succeeds; the others keep the result of their last attempt.
    Results are in port order.
    """
    results: dict[int, ProbeResult] = {}
    pending = list(ports)
    for attempt in range(retry + 1):
        if attempt:
            time.sleep(retry_delay)
        for result in probe_ports(
            cid, pending, sock_type, timeout, concurrency, flags, factory, opener
        ):
            results[result.port] = result
        pending = [port for port in pending if not results[port].open]
        if not pending:
            break
    return [results[port] for port in ports]
