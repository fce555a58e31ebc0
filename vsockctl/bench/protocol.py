"""The control exchange of ``vsockctl throughput``, version 1.

Every connection to a throughput server starts with a *frame*: a 12-byte
header (``struct`` ``=4sBBHI``: the magic ``VSKB``, the protocol version, the
frame kind, zero, the payload length) followed by a UTF-8 JSON object of at
most 64 KiB. On a seqpacket connection a frame is one message.

1. The client opens the *control* connection (always a stream, on the
   server's port) and sends ``TEST`` with the test's parameters.
2. The server answers ``ACCEPT`` (``{"test": id, "data_port": P, ...}``,
   P being a listener of the test's socket type made for this test) or
   ``REFUSE`` (``{"error": text}``: a version it does not speak, bad
   parameters, garbage) and closes.
3. The client opens ``parallel`` data connections to ``data_port``, each
   starting with ``STREAM`` (``{"test": id, "stream": i}``).
4. When all are there, the server sends ``START``; data flows (client to
   server, the reverse, or both) for the time or byte count asked.
   A sender ends its stream with a write shutdown.
5. Each end sends ``RESULT`` (its counters, intervals, CPU use, buffer sizes)
   on the control connection and reads the other's; the server then waits
   for the next client.
"""

from __future__ import annotations

import errno
import json
import socket
import struct
from collections.abc import Mapping
from enum import IntEnum
from typing import Any

from vsockctl.errors import Operation, ProtocolError, VsockError

MAGIC = b"VSKB"
VERSION = 1
HEADER = struct.Struct("=4sBBHI")
MAX_PAYLOAD = 64 * 1024
DEFAULT_PORT = 5201  # iperf's, as people expect


class FrameKind(IntEnum):
    TEST = 1
    ACCEPT = 2
    REFUSE = 3
    STREAM = 4
    START = 5
    RESULT = 6


_KINDS = {int(kind): kind for kind in FrameKind}


class VersionMismatch(ProtocolError):
    """The peer speaks another version of the control exchange."""

    def __init__(self, version: int) -> None:
        super().__init__(
            f"the peer speaks throughput protocol version {version}; this vsockctl speaks "
            f"{VERSION}: use the same vsockctl version on both ends"
        )
        self.version = version


def encode(kind: FrameKind, payload: Mapping[str, Any]) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    if len(body) > MAX_PAYLOAD:
        raise ValueError(f"control payload of {len(body)} bytes is over {MAX_PAYLOAD}")
    return HEADER.pack(MAGIC, VERSION, kind, 0, len(body)) + body


def send_frame(sock: socket.socket, kind: FrameKind, payload: Mapping[str, Any]) -> None:
    sock.sendall(encode(kind, payload))


def _recv_exactly(sock: socket.socket, size: int, what: str) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            if got == 0 and what == "header":
                raise EOFError("the peer closed the connection")
            raise ProtocolError(f"the peer closed the connection in the middle of a {what}")
        got += n
    return bytes(buf)


def decode_header(header: bytes) -> tuple[FrameKind, int]:
    """The kind and payload length from a header; ProtocolError for anything else."""
    magic, version, kind, _, length = HEADER.unpack(header)
    if magic != MAGIC:
        raise ProtocolError(
            f"not a vsockctl throughput peer (it sent {header[:12]!r} where "
            f"{MAGIC.decode()} was expected)"
        )
    if version != VERSION:
        raise VersionMismatch(version)
    if kind not in _KINDS:
        raise ProtocolError(f"unknown control frame kind {kind}")
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"control frame of {length} bytes is over {MAX_PAYLOAD}")
    return _KINDS[kind], length


def decode_payload(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"control frame is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ProtocolError("control frame is not a JSON object")
    return payload


def recv_frame(
    sock: socket.socket, expect: FrameKind | None = None, message: bool = False
) -> tuple[FrameKind, dict[str, Any]]:
    """One frame; ``message`` for seqpacket (the frame is one message).

    A ``REFUSE`` when something else was expected raises ProtocolError with
    the peer's reason. EOFError when the peer closed before a frame began;
    VsockError (ETIMEDOUT) that says which frame did not come in time.
    """
    try:
        kind, payload = _recv_frame(sock, message)
    except TimeoutError as exc:
        what = "control frame" if expect is None else f"{expect.name} frame"
        raise VsockError(
            errno.ETIMEDOUT,
            Operation.THROUGHPUT,
            None,
            f"the peer sent no {what} within {sock.gettimeout() or 0:g} s",
        ) from exc
    if expect is not None and kind != expect:
        if kind == FrameKind.REFUSE:
            raise ProtocolError(f"the peer refused: {payload.get('error', 'no reason given')}")
        article = "an" if expect.name[0] in "AEIOU" else "a"
        raise ProtocolError(f"expected {article} {expect.name} frame, got {kind.name}")
    return kind, payload


def _recv_frame(sock: socket.socket, message: bool) -> tuple[FrameKind, dict[str, Any]]:
    if message:
        data = sock.recv(HEADER.size + MAX_PAYLOAD)
        if not data:
            raise EOFError("the peer closed the connection")
        if len(data) < HEADER.size:
            raise ProtocolError(f"control message of {len(data)} bytes is too short")
        kind, length = decode_header(data[: HEADER.size])
        body = data[HEADER.size :]
        if len(body) != length:
            raise ProtocolError("control message length does not match its header")
    else:
        kind, length = decode_header(_recv_exactly(sock, HEADER.size, "header"))
        body = _recv_exactly(sock, length, "control frame")
    return kind, decode_payload(body)
