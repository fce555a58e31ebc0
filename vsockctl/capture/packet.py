"""One vsockmon frame: ``struct af_vsockmon_hdr``, the virtio header, the payload.

Layouts from ``include/uapi/linux/vsockmon.h`` and ``virtio_vsock.h`` (all
little-endian): the monitor header (32 bytes) says which transport's header
follows and how long it is; for virtio (vhost, the guest driver, loopback)
that is ``struct virtio_vsock_hdr`` (44 bytes), whose ``len`` is the payload's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

MONITOR_HEADER = struct.Struct("<QQIIHHH2x")  # src_cid dst_cid src_port dst_port op transport len
VIRTIO_HEADER = struct.Struct("<QQIIIHHIII")  # ... len type op flags buf_alloc fwd_cnt
HEADERS = MONITOR_HEADER.size + VIRTIO_HEADER.size  # what a line needs of a frame: 76 bytes
TRANSPORT_VIRTIO = 2


class Op(IntEnum):
    """The virtio transport's operations (``enum virtio_vsock_op``)."""

    REQUEST = 1
    RESPONSE = 2
    RST = 3
    SHUTDOWN = 4
    RW = 5
    CREDIT_UPDATE = 6
    CREDIT_REQUEST = 7


class PacketType(IntEnum):
    """``enum virtio_vsock_type``."""

    STREAM = 1
    SEQPACKET = 2


# Flag bits by op: SHUTDOWN's say which way is shut, a seqpacket RW's where a
# message (EOM) and a record (EOR, MSG_EOR) end.
SHUTDOWN_FLAGS = {1: "RCV", 2: "SEND"}
RW_FLAGS = {1: "EOM", 2: "EOR"}
FLAG_EOM = 1


class BadFrame(ValueError):
    """A frame too short for the headers it announces."""


@dataclass(frozen=True, slots=True)
class Packet:
    """A decoded frame; ``op`` etc. are None for a transport vsockctl cannot read."""

    time_ns: int
    src_cid: int
    src_port: int
    dst_cid: int
    dst_port: int
    transport: int
    type: int | None
    op: int | None
    flags: int
    length: int  # payload bytes, from the header (captured or not)
    buf_alloc: int
    fwd_cnt: int
    frame_bytes: int  # the whole frame's length on the link

    @property
    def src(self) -> str:
        return f"{self.src_cid}:{self.src_port}"

    @property
    def dst(self) -> str:
        return f"{self.dst_cid}:{self.dst_port}"

    @property
    def op_name(self) -> str:
        return _name(Op, self.op)

    @property
    def type_name(self) -> str:
        return _name(PacketType, self.type).lower()

    @property
    def transport_name(self) -> str:
        return "virtio" if self.transport == TRANSPORT_VIRTIO else f"transport {self.transport}"

    @property
    def flag_names(self) -> list[str]:
        """The flags by name for this op; bits with no name as hex."""
        table = SHUTDOWN_FLAGS if self.op == Op.SHUTDOWN else RW_FLAGS if self.op == Op.RW else {}
        names = [name for bit, name in table.items() if self.flags & bit]
        rest = self.flags & ~sum(bit for bit in table if self.flags & bit)
        return names + ([f"0x{rest:x}"] if rest else [])

    @property
    def ends_message(self) -> bool:
        return (
            self.op == Op.RW and self.type == PacketType.SEQPACKET and bool(self.flags & FLAG_EOM)
        )


def _name(kind: type[IntEnum], value: int | None) -> str:
    if value is None:
        return "?"
    try:
        return kind(value).name
    except ValueError:
        return str(value)


def decode(frame: bytes | memoryview, time_ns: int, frame_bytes: int | None = None) -> Packet:
    """The packet in ``frame`` (its first bytes at least: :data:`HEADERS` of them)."""
    if len(frame) < MONITOR_HEADER.size:
        raise BadFrame(f"a {len(frame)}-byte frame is shorter than the vsockmon header")
    src_cid, dst_cid, src_port, dst_port, _, transport, header_len = MONITOR_HEADER.unpack_from(
        frame
    )
    whole = len(frame) if frame_bytes is None else frame_bytes
    if transport != TRANSPORT_VIRTIO or header_len < VIRTIO_HEADER.size:
        return Packet(
            time_ns, src_cid, src_port, dst_cid, dst_port, transport, None, None, 0,
            max(whole - MONITOR_HEADER.size - header_len, 0), 0, 0, whole,
        )  # fmt: skip
    if len(frame) < HEADERS:
        raise BadFrame(f"a {len(frame)}-byte frame is shorter than the virtio header it announces")
    _, _, _, _, length, sock_type, op, flags, buf_alloc, fwd_cnt = VIRTIO_HEADER.unpack_from(
        frame, MONITOR_HEADER.size
    )
    return Packet(
        time_ns, src_cid, src_port, dst_cid, dst_port, transport, sock_type, op, flags,
        length, buf_alloc, fwd_cnt, whole,
    )  # fmt: skip


@dataclass(frozen=True)
class Selection:
    """Which packets to show: a CID or port on either end, a socket type, some ops."""

    cid: int | None = None
    port: int | None = None
    type: int | None = None
    ops: frozenset[int] = frozenset()

    def matches(self, packet: Packet, *, ops: bool = True) -> bool:
        """Whether ``packet`` is selected (by its ends and type alone, without ``ops``)."""
        return (
            (self.cid is None or self.cid in (packet.src_cid, packet.dst_cid))
            and (self.port is None or self.port in (packet.src_port, packet.dst_port))
            and (self.type is None or packet.type == self.type)
            and (not ops or not self.ops or packet.op in self.ops)
        )
