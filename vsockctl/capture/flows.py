"""Each vsock connection in a capture followed: packets and bytes each way, how it opened
and ended, seqpacket messages, and its flow control.

vsock's flow control is credit: every packet carries its sender's receive
buffer (``buf_alloc``) and how much of it the application has read
(``fwd_cnt``). A sender may have ``buf_alloc - (tx_cnt - fwd_cnt)`` bytes in
flight to that receiver, its free credit; at zero it waits for a
``CREDIT_UPDATE``. A receiver that does not read keeps its peer at zero, and
nothing but these packets shows it (sock_diag carries no queue sizes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from .packet import Op, Packet, PacketType

KEPT_CLOSINGS = 8  # shutdowns and resets remembered per connection
KEPT_FINISHED = 10_000  # ended connections held for a summary
LINGERING = 4096  # ended connections that late resets still find


class Opened(StrEnum):
    ACCEPTED = "accepted"  # REQUEST answered by RESPONSE
    REFUSED = "refused"  # REQUEST answered by RST: nothing listened
    PENDING = "pending"  # REQUEST, no answer yet
    EARLIER = "earlier"  # opened before the capture started


@dataclass
class Side:
    """One end: what it sent, and, as a sender, the credit its peer gave it."""

    endpoint: str  # CID:PORT
    address: tuple[int, int]  # the same, to compare
    packets: int = 0
    payload_bytes: int = 0
    messages: int = 0  # seqpacket: RW packets with EOM
    message_min_bytes: int | None = None
    message_max_bytes: int = 0
    _message_bytes: int = 0
    credit_requests: int = 0
    credit_updates: int = 0
    buf_alloc: int | None = None  # its receive buffer, as last advertised
    fwd_cnt: int = 0  # what its application has read, as last advertised
    min_free_bytes: int | None = None  # the least credit it had towards its peer
    window_full_ns: int = 0  # time at zero credit
    window_full_times: int = 0
    full_since: int | None = None

    def sent(self, packet: Packet) -> None:
        self.packets += 1
        if packet.op != Op.RST:  # a reset's counters are zero: the socket is gone
            self.buf_alloc, self.fwd_cnt = packet.buf_alloc, packet.fwd_cnt
        if packet.op == Op.CREDIT_REQUEST:
            self.credit_requests += 1
        elif packet.op == Op.CREDIT_UPDATE:
            self.credit_updates += 1
        elif packet.op == Op.RW:
            self.payload_bytes += packet.length
            self._message_bytes += packet.length
            if packet.ends_message:
                size, self._message_bytes = self._message_bytes, 0
                self.messages += 1
                self.message_max_bytes = max(self.message_max_bytes, size)
                low = self.message_min_bytes
                self.message_min_bytes = size if low is None else min(low, size)

    def free_towards(self, peer: Side) -> int | None:
        """The credit this side has for sending to ``peer``: None before it sent a byte
        (or before the peer said how big its buffer is)."""
        if peer.buf_alloc is None or not self.payload_bytes:
            return None
        return peer.buf_alloc - (self.payload_bytes - peer.fwd_cnt)

    def window_full(self, now_ns: int, free: int) -> bool | None:
        """Note credit ``free`` at ``now_ns``: True when it hit zero, False when it came back."""
        low = self.min_free_bytes
        self.min_free_bytes = free if low is None else min(low, free)
        if free <= 0 and self.full_since is None:
            self.full_since = now_ns
            self.window_full_times += 1
            return True
        if free > 0 and self.full_since is not None:
            self.window_full_ns += now_ns - self.full_since
            self.full_since = None
            return False
        return None

    def full_ns(self, now_ns: int) -> int:
        """Time at zero credit so far, counting a stretch still going at ``now_ns``."""
        current = now_ns - self.full_since if self.full_since is not None else 0
        return self.window_full_ns + current


@dataclass(frozen=True)
class Closing:
    by: str  # "client" or "server"
    op: str  # SHUTDOWN or RST
    flags: tuple[str, ...]


@dataclass
class Connection:
    type: int | None
    client: Side
    server: Side
    first_ns: int
    opened: Opened
    last_ns: int = 0
    ended_ns: int | None = None  # the first RST
    closings: list[Closing] = field(default_factory=list)

    @property
    def type_name(self) -> str:
        try:
            return PacketType(self.type or 0).name.lower()
        except ValueError:
            return f"type {self.type}"

    def role(self, packet: Packet) -> tuple[str, Side, Side]:
        """Who sent ``packet`` ("client" or "server"), its side, and the other."""
        if (packet.src_cid, packet.src_port) == self.client.address:
            return "client", self.client, self.server
        return "server", self.server, self.client

    def span_ns(self, now_ns: int) -> int:
        """From the first packet to the end (the first reset), or to ``now_ns``."""
        end = self.ended_ns if self.ended_ns is not None else now_ns
        return max(end - self.first_ns, 0)

    def full_fraction(self, side: Side, now_ns: int) -> float:
        """The share of the connection's time ``side`` spent at zero credit."""
        span = self.span_ns(now_ns)
        return side.full_ns(self.ended_ns or now_ns) / span if span else 0.0


class Change(StrEnum):
    OPENED = "opened"
    WINDOW_FULL = "window_full"
    WINDOW_OPEN = "window_open"
    ENDED = "ended"


@dataclass(frozen=True)
class Event:
    """What --follow reports: a connection opened or ended, a window filled or opened."""

    change: Change
    connection: Connection
    sender: str | None = None  # "client" or "server", for the window
    free_bytes: int | None = None


Key = tuple[int | None, tuple[int, int], tuple[int, int]]  # type, the ends in order


def _key(packet: Packet) -> Key:
    src, dst = (packet.src_cid, packet.src_port), (packet.dst_cid, packet.dst_port)
    return (packet.type, src, dst) if src < dst else (packet.type, dst, src)


class Flows:
    """Connections as packets arrive; :meth:`add` says what changed."""

    def __init__(self) -> None:
        self.live: dict[Key, Connection] = {}
        self.finished: list[Connection] = []
        self.not_kept = 0  # ended connections beyond KEPT_FINISHED
        self.lingering: dict[Key, Connection] = {}

    def add(self, packet: Packet) -> list[Event]:
        if packet.op is None:
            return []
        key = _key(packet)
        events: list[Event] = []
        conn = self.live.get(key)
        if packet.op == Op.REQUEST or (conn is None and key not in self.lingering):
            conn = self._open(key, packet)
            events.append(Event(Change.OPENED, conn))
        elif conn is None:
            conn = self.lingering[key]  # a late reset of a connection that ended
        conn.last_ns = packet.time_ns
        who, side, _ = conn.role(packet)
        side.sent(packet)
        if packet.op == Op.RESPONSE and conn.opened is Opened.PENDING:
            conn.opened = Opened.ACCEPTED
        if packet.op in (Op.SHUTDOWN, Op.RST) and len(conn.closings) < KEPT_CLOSINGS:
            closing = Closing(who, packet.op_name, tuple(packet.flag_names))
            if not conn.closings or conn.closings[-1] != closing:
                conn.closings.append(closing)
        events += self._credit(conn, packet.time_ns)
        if packet.op == Op.RST and conn.ended_ns is None:
            if conn.opened is Opened.PENDING:
                conn.opened = Opened.REFUSED
            self._end(key, conn, packet.time_ns)
            events.append(Event(Change.ENDED, conn))
        return events

    def _open(self, key: Key, packet: Packet) -> Connection:
        old = self.live.pop(key, None)
        if old is not None:
            self._end(key, old, packet.time_ns)
        opened = Opened.PENDING if packet.op == Op.REQUEST else Opened.EARLIER
        client = Side(packet.src, (packet.src_cid, packet.src_port))
        server = Side(packet.dst, (packet.dst_cid, packet.dst_port))
        conn = Connection(packet.type, client, server, packet.time_ns, opened)
        self.live[key] = conn
        return conn

    def _credit(self, conn: Connection, now_ns: int) -> Iterator[Event]:
        for who, side, peer in (
            ("client", conn.client, conn.server),
            ("server", conn.server, conn.client),
        ):
            free = side.free_towards(peer)
            if free is None or conn.ended_ns is not None:
                continue
            changed = side.window_full(now_ns, free)
            if changed is not None:
                change = Change.WINDOW_FULL if changed else Change.WINDOW_OPEN
                yield Event(change, conn, who, free)

    def _end(self, key: Key, conn: Connection, now_ns: int) -> None:
        conn.ended_ns = now_ns
        for side in (conn.client, conn.server):
            side.window_full_ns, side.full_since = side.full_ns(now_ns), None
        self.live.pop(key, None)
        self.lingering[key] = conn
        if len(self.lingering) > LINGERING:
            del self.lingering[next(iter(self.lingering))]
        if len(self.finished) < KEPT_FINISHED:
            self.finished.append(conn)
        else:
            self.not_kept += 1

    @property
    def seen(self) -> int:
        """How many connections the capture saw, kept or not."""
        return len(self.finished) + self.not_kept + len(self.live)

    def every(self) -> list[Connection]:
        """Ended connections, then those still open, in the order they started."""
        return sorted([*self.finished, *self.live.values()], key=lambda c: c.first_ns)
