"""What ``forward`` reports and counts: a connection's :class:`Flow`, the
:class:`Totals`, the :class:`Observer` that hears of them, and :class:`Allow`."""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from vsockctl.events.forward import Outcome
from vsockctl.forward.direction import Direction
from vsockctl.forward.sides import tcp_peer_address


@dataclass(eq=False)  # each flow is itself: a key of the live table
class Flow:
    """One forwarded connection: who, where to, what moved, and how it ended."""

    peer: str
    target: str
    started_ns: int = field(default_factory=time.monotonic_ns)
    ended_ns: int | None = None
    outcome: Outcome = Outcome.DONE
    error: OSError | None = None
    upstream: Direction = field(default_factory=lambda: Direction("client", "target"))
    downstream: Direction = field(default_factory=lambda: Direction("target", "client"))

    @property
    def elapsed_ns(self) -> int:
        return (self.ended_ns or time.monotonic_ns()) - self.started_ns


@dataclass
class Totals:
    """Everything the forwarder did, for the line it prints when it stops."""

    started_ns: int = field(default_factory=time.monotonic_ns)
    opened: int = 0
    failed: int = 0
    refused: int = 0
    upstream: Direction = field(default_factory=lambda: Direction("clients", "target"))
    downstream: Direction = field(default_factory=lambda: Direction("target", "clients"))


class Refusal(StrEnum):
    """Why a client was closed unserved (a metrics label: few values, fixed)."""

    NOT_ALLOWED = "not_allowed"  # --allow left it out
    ACCEPT_FAILED = "accept_failed"  # accept(2) itself failed (EMFILE ...)


class Observer(Protocol):
    """What the forwarder reports; called from the connections' threads."""

    def opened(self, flow: Flow) -> None: ...

    def closed(self, flow: Flow) -> None: ...

    def failed(self, peer: str, target: str, error: BaseException) -> None: ...

    def refused(self, peer: str, reason: Refusal, why: str) -> None: ...


@dataclass(frozen=True)
class Allow:
    """Who may connect: peer CIDs (a vsock listener) or source networks (TCP)."""

    cids: frozenset[int] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def permits(self, family: int, address: object) -> bool:
        if family in (socket.AF_INET, socket.AF_INET6):
            source = tcp_peer_address(address)
            return any(source in network for network in self.networks)
        assert isinstance(address, tuple)
        return int(address[0]) in self.cids


@dataclass(eq=False)
class Pending:
    """A connection for the relay threads: its flow, its sockets, and per direction the
    bytes to send before anything else (None: that direction has ended)."""

    flow: Flow
    conn: socket.socket
    upstream: socket.socket
    up: bytes | None = b""
    down: bytes | None = b""
