"""The records of ``capture``."""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

from .record import Declared


class Capturing(TypedDict):
    event: Literal["capturing"]
    interface: Annotated[str | None, "the vsockmon link read (null: reading a file)"]
    link_created: Annotated[bool, "the link was added for this capture (and is removed after)"]
    module_loaded: Annotated[bool, "vsockmon was loaded for this capture (and is unloaded after)"]
    file: Annotated[str | None, "the pcap file read (-r) or written (-w), or null"]
    snaplen_bytes: Annotated[int, "how much of each frame is kept"]


class Packet(TypedDict):
    event: Literal["packet"]
    time_ns: Annotated[int, "when the kernel saw it (ns since the epoch)"]
    transport: Annotated[str, "virtio (vhost, the guest driver and loopback all use it)"]
    src: Annotated[str, "the sender, CID:PORT"]
    src_cid: Annotated[int, "the sender's CID"]
    src_port: Annotated[int, "the sender's port"]
    dst: Annotated[str, "the receiver, CID:PORT"]
    dst_cid: Annotated[int, "the receiver's CID"]
    dst_port: Annotated[int, "the receiver's port"]
    type: Annotated[str, "stream or seqpacket"]
    op: Annotated[str, "REQUEST, RESPONSE, RST, SHUTDOWN, RW, CREDIT_UPDATE or CREDIT_REQUEST"]
    flags: Annotated[list[str], "SHUTDOWN: RCV, SEND; seqpacket RW: EOM, EOR"]
    payload_bytes: Annotated[int, "the payload's length (RW)"]
    buf_alloc: Annotated[int, "the sender's receive buffer, bytes"]
    fwd_cnt: Annotated[int, "bytes the sender's application has read so far"]
    frame_bytes: Annotated[int, "the frame's length on the link, headers included"]


class Ends(TypedDict):
    """A connection's two ends."""

    client: Annotated[str, "who sent REQUEST (or the first packet seen), CID:PORT"]
    server: Annotated[str, "the other end, CID:PORT"]
    type: Annotated[str, "stream or seqpacket"]


class Window(Ends):
    event: Literal["window"]
    time_ns: Annotated[int, "the packet that changed it"]
    sender: Annotated[str, "whose window: client or server (as a sender)"]
    full: Annotated[bool, "true: no credit left, the receiver's buffer is full; false: open again"]
    free_bytes: Annotated[int, "the sender's credit now"]


class Closing(TypedDict):
    by: Annotated[str, "client or server"]
    op: Annotated[str, "SHUTDOWN or RST"]
    flags: Annotated[list[str], "SHUTDOWN's: RCV, SEND"]


class Direction(TypedDict):
    """What one end sent, and the credit it had towards the other."""

    packets: Annotated[int, "packets it sent"]
    payload_bytes: Annotated[int, "RW payload it sent"]
    messages: Annotated[int, "seqpacket messages it sent (RW with EOM)"]
    message_min_bytes: Annotated[int | None, "the smallest of them, or null"]
    message_max_bytes: Annotated[int, "the largest of them (0: none)"]
    credit_requests: Annotated[int, "CREDIT_REQUEST packets it sent"]
    credit_updates: Annotated[int, "CREDIT_UPDATE packets it sent"]
    min_free_bytes: Annotated[int | None, "the least credit it had (null: never known)"]
    window_full_ns: Annotated[int, "how long it had no credit: its peer's buffer full"]
    window_full_times: Annotated[int, "how often its credit ran out"]
    window_full_share: Annotated[float, "window_full_ns over the connection's time, 0 to 1"]


class ConnectionRecord(Ends):
    event: Literal["connection"]
    opened: Annotated[
        str, "accepted, refused (REQUEST answered by RST), pending, or earlier (before the capture)"
    ]
    closing: Annotated[list[Closing], "the shutdowns and resets, in order (the first 8)"]
    ended: Annotated[bool, "a reset ended it (false: still open when the capture stopped)"]
    first_ns: Annotated[int, "its first packet (ns since the epoch)"]
    elapsed_ns: Annotated[int, "from its first packet to the reset, or to the capture's end"]
    from_client: Annotated[Direction, "the client as a sender"]
    from_server: Annotated[Direction, "the server as a sender"]


class CaptureDone(TypedDict):
    event: Literal["capture_done"]
    packets: Annotated[int, "packets read"]
    matched: Annotated[int, "of them, those the filters let through"]
    dropped: Annotated[int | None, "packets the kernel dropped for want of room (null: a file)"]
    written_bytes: Annotated[int | None, "bytes written to -w's file, or null"]
    connections: Annotated[int, "connections seen"]
    elapsed_ns: Annotated[int, "how long the capture ran"]


DECLARED = (
    Declared(Capturing, ("capture",), "the capture started"),
    Declared(Packet, ("capture",), "one packet (not with --summary or --follow)"),
    Declared(Window, ("capture",), "--follow: a sender ran out of credit, or got some back"),
    Declared(ConnectionRecord, ("capture",), "--follow: a connection ended; --summary: each one"),
    Declared(CaptureDone, ("capture",), "the last record"),
)
