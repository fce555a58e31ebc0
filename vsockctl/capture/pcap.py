"""pcap files of link type DLT_VSOCK (271), written and read a record at a time.

Written in the classic libpcap format (microseconds), which every tool reads.
Read: that format in either byte order and in nanoseconds, and pcapng (what
tshark and dumpcap write by default): its section, interface and packet blocks.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

LINKTYPE_VSOCK = 271
DEFAULT_SNAPLEN = 262144  # tcpdump's

_MICRO, _NANO = 0xA1B2C3D4, 0xA1B23C4D
_PCAPNG_SECTION = 0x0A0D0D0A
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_IDB, _SPB, _EPB = 1, 3, 6
_IF_TSRESOL = 9
_FILE_HEADER = struct.Struct("<IHHiIII")  # magic, version 2.4, zone, sigfigs, snaplen, link
_RECORD_HEADER = struct.Struct("<IIII")  # seconds, microseconds, captured, length


class PcapError(ValueError):
    """A file that is not a pcap of vsock packets, or is cut short."""


class Sink(Protocol):
    def write(self, data: memoryview) -> None: ...


@dataclass(frozen=True, slots=True)
class Record:
    """One captured frame: when, its bytes as captured, and its length on the link."""

    time_ns: int
    data: bytes
    frame_bytes: int


class PcapWriter:
    """Appends records to ``sink`` through a buffer of ``buffer_bytes``; :meth:`flush` writes.

    A live capture receives each frame straight into the buffer (:meth:`slot`), so a
    frame is copied once on its way from the kernel to the file.
    """

    def __init__(self, sink: Sink, snaplen: int = DEFAULT_SNAPLEN, buffer_bytes: int = 4 << 20):
        self.sink = sink
        self.snaplen = snaplen
        room = _FILE_HEADER.size + _RECORD_HEADER.size + snaplen
        self.buffer = bytearray(max(buffer_bytes, room))
        self.view = memoryview(self.buffer)
        self.used = 0
        self.started = False
        self.written = 0  # bytes handed to the sink
        self.records = 0

    def _start(self) -> None:
        """The file header, before the first record (or alone, for a capture of nothing)."""
        if not self.started:
            self.started = True
            header = (_MICRO, 2, 4, 0, 0, self.snaplen, LINKTYPE_VSOCK)
            _FILE_HEADER.pack_into(self.buffer, self.used, *header)
            self.used += _FILE_HEADER.size

    def slot(self) -> memoryview:
        """Where the next record's bytes go: receive into it, then :meth:`add` them."""
        self._start()
        if len(self.buffer) - self.used < _RECORD_HEADER.size + self.snaplen:
            self.flush()
        start = self.used + _RECORD_HEADER.size
        return self.view[start : start + self.snaplen]

    def add(self, time_ns: int, data: bytes | memoryview, frame_bytes: int) -> None:
        slot = self.slot()
        size = min(len(data), self.snaplen)
        if not (isinstance(data, memoryview) and data.obj is self.buffer):  # else: in place
            slot[:size] = data[:size]
        seconds, rest = divmod(time_ns, 1_000_000_000)
        _RECORD_HEADER.pack_into(self.buffer, self.used, seconds, rest // 1000, size, frame_bytes)
        self.used += _RECORD_HEADER.size + size
        self.records += 1

    def finish(self) -> None:
        """Write what is pending; a file with no record gets its header."""
        self._start()
        self.flush()

    def flush(self) -> None:
        if self.used:
            self.sink.write(self.view[: self.used])
            self.written += self.used
            self.used = 0


def _exactly(stream: BinaryIO, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise PcapError(f"the file ends inside {what}")
    return data


def read_records(stream: BinaryIO) -> Iterator[Record]:
    """Every record of a pcap or pcapng file of DLT_VSOCK packets, in file order.

    The file's header is checked at once: PcapError before any record.
    """
    head = stream.read(4)
    if len(head) < 4:
        raise PcapError("the file is empty or shorter than a pcap header")
    if struct.unpack("<I", head)[0] == _PCAPNG_SECTION:
        return _pcapng(stream, head)
    for order in "<>":
        (magic,) = struct.unpack(order + "I", head)
        if magic in (_MICRO, _NANO):
            header = _exactly(stream, 20, "the header")
            _check_link(struct.unpack(order + "HHiIII", header)[5] & 0xFFFF)
            return _pcap(stream, order, 1000 if magic == _MICRO else 1)
    raise PcapError("not a pcap or pcapng file (unknown magic number)")


def _check_link(linktype: int) -> None:
    if linktype != LINKTYPE_VSOCK:
        raise PcapError(
            f"link type {linktype}, not vsock (DLT_VSOCK, 271): capture on a vsockmon interface"
        )


def _pcap(stream: BinaryIO, order: str, unit_ns: int) -> Iterator[Record]:
    record = struct.Struct(order + "IIII")
    while head := stream.read(record.size):
        if len(head) < record.size:
            raise PcapError("the file ends inside a record header")
        seconds, fraction, captured, length = record.unpack(head)
        data = _exactly(stream, captured, "a packet")
        yield Record(seconds * 1_000_000_000 + fraction * unit_ns, data, length)


def _pcapng(stream: BinaryIO, head: bytes) -> Iterator[Record]:
    order = "<"
    interfaces: list[int] = []  # each interface's time unit in ns
    while True:
        if not head:
            return
        if len(head) < 4:
            raise PcapError("the file ends inside a block")
        rest = _exactly(stream, 4, "a block")
        if struct.unpack("<I", head)[0] == _PCAPNG_SECTION:
            magic = _exactly(stream, 4, "a section header")
            order = "<" if struct.unpack("<I", magic)[0] == _BYTE_ORDER_MAGIC else ">"
            (total,) = struct.unpack(order + "I", rest)
            _exactly(stream, total - 12, "a section header")
            interfaces = []
            head = stream.read(4)
            continue
        (kind,) = struct.unpack(order + "I", head)
        (total,) = struct.unpack(order + "I", rest)
        if total < 12:
            raise PcapError(f"a pcapng block of {total} bytes")
        body = _exactly(stream, total - 8, "a block")[:-4]
        if kind == _IDB:
            (linktype,) = struct.unpack_from(order + "H", body)
            _check_link(linktype)
            interfaces.append(_time_unit(body[8:], order))
        elif kind == _EPB:
            interface, high, low, captured, length = struct.unpack_from(order + "IIIII", body)
            unit = interfaces[interface] if interface < len(interfaces) else 1000
            yield Record(((high << 32) | low) * unit, body[20 : 20 + captured], length)
        elif kind == _SPB:
            (length,) = struct.unpack_from(order + "I", body)
            yield Record(0, body[4 : 4 + length], length)
        head = stream.read(4)


def _time_unit(options: bytes, order: str) -> int:
    """An interface's time unit in ns, from its if_tsresol option (microseconds without one)."""
    offset = 0
    while offset + 4 <= len(options):
        code, size = struct.unpack_from(order + "HH", options, offset)
        if code == 0:
            break
        if code == _IF_TSRESOL and size >= 1:
            resolution: int = options[offset + 4]
            exponent = resolution & 0x7F
            if resolution & 0x80:
                return max(1_000_000_000 >> exponent, 1)
            return int(10 ** max(9 - exponent, 0))
        offset += 4 + (size + 3) // 4 * 4
    return 1000
