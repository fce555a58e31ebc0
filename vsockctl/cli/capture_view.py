"""What ``vsockctl capture`` prints: a line or record per packet, --follow's changes, and
each connection's report."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from vsockctl.capture.flows import Change, Connection, Event, Side

from .format import human_bytes, human_seconds, plural

if TYPE_CHECKING:
    from vsockctl.capture.packet import Packet
    from vsockctl.events.capture import ConnectionRecord, Direction, Window
    from vsockctl.events.capture import Packet as PacketRecord


def clock(time_ns: int) -> str:
    """``14:08:20.713960``, local time, as tcpdump prints it."""
    seconds, rest = divmod(time_ns, 1_000_000_000)
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{rest // 1000:06d}"


def packet_line(packet: Packet) -> str:
    flags = f" [{'|'.join(packet.flag_names)}]" if packet.flag_names else ""
    return (
        f"{clock(packet.time_ns)} {packet.transport_name} {packet.type_name} "
        f"{packet.src} → {packet.dst} {packet.op_name}{flags} len {packet.length} "
        f"buf_alloc {packet.buf_alloc} fwd_cnt {packet.fwd_cnt}"
    )


def packet_record(packet: Packet) -> PacketRecord:
    return {
        "event": "packet",
        "time_ns": packet.time_ns,
        "transport": packet.transport_name,
        "src": packet.src,
        "src_cid": packet.src_cid,
        "src_port": packet.src_port,
        "dst": packet.dst,
        "dst_cid": packet.dst_cid,
        "dst_port": packet.dst_port,
        "type": packet.type_name,
        "op": packet.op_name,
        "flags": packet.flag_names,
        "payload_bytes": packet.length,
        "buf_alloc": packet.buf_alloc,
        "fwd_cnt": packet.fwd_cnt,
        "frame_bytes": packet.frame_bytes,
    }


def _ends(conn: Connection) -> str:
    return f"{conn.type_name} {conn.client.endpoint} → {conn.server.endpoint}"


def window_line(event: Event, time_ns: int) -> str:
    conn = event.connection
    sender, receiver = (
        (conn.client, conn.server) if event.sender == "client" else (conn.server, conn.client)
    )
    if event.change is Change.WINDOW_FULL:
        return (
            f"{clock(time_ns)} window full: {sender.endpoint} cannot send to {receiver.endpoint}, "
            f"whose {human_bytes(receiver.buf_alloc or 0)} buffer is full (not read)"
        )
    return (
        f"{clock(time_ns)} window open: {sender.endpoint} → {receiver.endpoint} "
        f"has {human_bytes(event.free_bytes or 0)} of credit again"
    )


def window_record(event: Event, time_ns: int) -> Window:
    conn = event.connection
    return {
        "event": "window",
        "client": conn.client.endpoint,
        "server": conn.server.endpoint,
        "type": conn.type_name,
        "time_ns": time_ns,
        "sender": event.sender or "client",
        "full": event.change is Change.WINDOW_FULL,
        "free_bytes": event.free_bytes or 0,
    }


def _closing_text(conn: Connection) -> str:
    steps = [f"{c.by} {c.op}" + (f" {'|'.join(c.flags)}" if c.flags else "") for c in conn.closings]
    return " → ".join(steps)


def _direction_text(conn: Connection, side: Side, now_ns: int) -> str:
    parts = [plural(side.packets, "packet"), human_bytes(side.payload_bytes)]
    if side.messages:
        parts.append(
            f"{plural(side.messages, 'message')} "
            f"({human_bytes(side.message_min_bytes or 0)} to {human_bytes(side.message_max_bytes)})"
        )
    if side.credit_requests:
        parts.append(plural(side.credit_requests, "credit request"))
    full_ns = side.full_ns(now_ns)
    if side.window_full_times:
        share = conn.full_fraction(side, now_ns)
        parts.append(
            f"receiver window full {share:.0%} of the time "
            f"({plural(side.window_full_times, 'time')}, {human_seconds(full_ns)})"
        )
    elif side.min_free_bytes is not None:
        parts.append(f"least credit {human_bytes(side.min_free_bytes)}")
    return ", ".join(parts)


def connection_lines(conn: Connection, now_ns: int) -> list[str]:
    how = conn.opened.value
    if conn.closings:
        how += f", closed by {_closing_text(conn)}"
    elif conn.ended_ns is None:
        how += ", still open"
    elapsed = human_seconds(conn.span_ns(now_ns))
    return [
        f"{_ends(conn)}: {how} ({elapsed})",
        f"  client → server: {_direction_text(conn, conn.client, now_ns)}",
        f"  server → client: {_direction_text(conn, conn.server, now_ns)}",
    ]


def _direction(conn: Connection, side: Side, now_ns: int) -> Direction:
    return {
        "packets": side.packets,
        "payload_bytes": side.payload_bytes,
        "messages": side.messages,
        "message_min_bytes": side.message_min_bytes,
        "message_max_bytes": side.message_max_bytes,
        "credit_requests": side.credit_requests,
        "credit_updates": side.credit_updates,
        "min_free_bytes": side.min_free_bytes,
        "window_full_ns": side.full_ns(now_ns),
        "window_full_times": side.window_full_times,
        "window_full_share": round(conn.full_fraction(side, now_ns), 4),
    }


def connection_record(conn: Connection, now_ns: int) -> ConnectionRecord:
    return {
        "event": "connection",
        "client": conn.client.endpoint,
        "server": conn.server.endpoint,
        "type": conn.type_name,
        "opened": conn.opened.value,
        "closing": [{"by": c.by, "op": c.op, "flags": list(c.flags)} for c in conn.closings],
        "ended": conn.ended_ns is not None,
        "first_ns": conn.first_ns,
        "elapsed_ns": conn.span_ns(now_ns),
        "from_client": _direction(conn, conn.client, now_ns),
        "from_server": _direction(conn, conn.server, now_ns),
    }
