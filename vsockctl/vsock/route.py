"""Where a connection goes, or where a listener waits: one value, made once.

A :class:`Route` is either a vsock address (CID, port and ``svm_flags`` such as
``VMADDR_FLAG_TO_HOST``) or, for Firecracker and Cloud Hypervisor, a guest port
reached through the VMM's hybrid vsock Unix socket. The command line builds it
from its options; everything after that (connect, listen, probe, throughput)
takes the route and asks it, never the options again.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace

from vsockctl.errors import ProtocolError
from vsockctl.vsock.address import Endpoint, UnixEndpoint, VsockAddress
from vsockctl.vsock.constants import VMADDR_CID_ANY, VMADDR_CID_HOST, VMADDR_PORT_ANY
from vsockctl.vsock.hybrid import connect_hybrid, hybrid_listener, listener_path
from vsockctl.vsock.sockets import (
    Opener,
    SocketFactory,
    SocketType,
    connect_with_retry,
    listen,
)


@dataclass(frozen=True)
class Route:
    """A vsock ``address``, or with ``uds`` a port through a VMM's hybrid vsock socket.

    With ``uds`` only ``address.port`` counts: the VMM's socket stands for the CID.
    """

    address: VsockAddress
    uds: str | None = None

    @classmethod
    def hybrid(cls, uds: str, port: int) -> Route:
        return cls(VsockAddress(VMADDR_CID_ANY, port), uds)

    @property
    def port(self) -> int:
        return self.address.port

    @property
    def shown(self) -> Endpoint:
        """The peer as the user named it: CID:PORT, or the Unix socket and port."""
        return self.address if self.uds is None else UnixEndpoint(self.uds, self.port)

    @property
    def half_close_may_be_lost(self) -> bool:
        """Whether our half-close may never reach the peer: a guest's connection to the
        host (CID 2) may end at a VMM's user-space mux, which drops it."""
        return self.uds is None and self.address.cid == VMADDR_CID_HOST

    def with_port(self, port: int) -> Route:
        return replace(self, address=replace(self.address, port=port))

    @property
    def opener(self) -> Opener | None:
        """How a connection opens when it is not a plain vsock connect (hybrid vsock)."""
        uds = self.uds
        if uds is None:
            return None

        def open_hybrid(address: VsockAddress, timeout: float | None) -> socket.socket:
            return connect_hybrid(uds, address.port, timeout)

        return open_hybrid

    def connect(
        self,
        sock_type: SocketType = SocketType.STREAM,
        timeout: float | None = None,
        *,
        retries: int = 0,
        retry_delay: float = 1.0,
        factory: SocketFactory = socket.socket,
    ) -> socket.socket:
        """A connected socket, tried ``retries`` more times while nothing listens yet."""
        if self.uds is not None and sock_type is not SocketType.STREAM:
            raise ProtocolError("hybrid vsock carries streams only")
        return connect_with_retry(
            self.address,
            sock_type,
            timeout,
            retries=retries,
            retry_delay=retry_delay,
            factory=factory,
            opener=self.opener,
        )

    @contextlib.contextmanager
    def listen(
        self,
        sock_type: SocketType = SocketType.STREAM,
        backlog: int = socket.SOMAXCONN,
        factory: SocketFactory = socket.socket,
    ) -> Iterator[socket.socket]:
        """A listening socket: vsock, or the hybrid listener ``PATH_PORT`` (removed at exit).

        On a hybrid route a port of ``any`` picks a free ``PATH_PORT``.
        """
        if self.uds is None:
            with listen(self.address, sock_type, backlog, factory=factory) as sock:
                yield sock
            return
        if sock_type is not SocketType.STREAM:
            raise ProtocolError("hybrid vsock carries streams only")
        port = self.port if self.port != VMADDR_PORT_ANY else _free_hybrid_port(self.uds)
        with hybrid_listener(self.uds, port, backlog) as sock:
            yield sock


def _free_hybrid_port(uds: str) -> int:
    """A port with no ``PATH_PORT`` file yet (hybrid vsock has no kernel to pick one)."""
    for _ in range(100):
        port = random.randint(1024, 65535)
        if not os.path.lexists(listener_path(uds, port)):
            return port
    raise ProtocolError(f"no free {uds}_PORT for a listener")
