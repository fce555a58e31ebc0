"""One capture's loop: frames in, packets decoded and filtered, flows followed, a file written."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .flows import Event, Flows
from .packet import BadFrame, Packet, Selection, decode
from .pcap import PcapWriter

Frame = tuple[int, "bytes | memoryview", int]  # time_ns, the bytes captured, the frame's length


@dataclass
class Counts:
    packets: int = 0  # frames read
    matched: int = 0  # of them, through the filters
    malformed: int = 0  # too short for their headers (a cut snap length, a broken file)
    last_ns: int = 0  # the newest frame's time
    dropped: int | None = None  # frames the kernel could not queue (a live capture's)


@dataclass
class Session:
    """What a capture does with each frame; the callbacks show what a person or script sees."""

    selection: Selection
    flows: Flows | None = None
    writer: PcapWriter | None = None
    on_packet: Callable[[Packet], None] | None = None
    on_event: Callable[[Event], None] | None = None
    limit: int | None = None  # stop after this many matching packets

    def __post_init__(self) -> None:
        self.counts = Counts()
        self.started = False  # the source is open: what follows is reported

    @property
    def done(self) -> bool:
        return self.limit is not None and self.counts.matched >= self.limit

    def run(self, frames: Iterable[Frame]) -> None:
        """Take frames until they end or :attr:`limit` packets matched."""
        if self.done:
            return
        for time_ns, data, frame_bytes in frames:
            self.counts.packets += 1
            self.counts.last_ns = time_ns
            try:
                packet = decode(data, time_ns, frame_bytes)
            except BadFrame:
                self.counts.malformed += 1
                continue
            if self.flows is not None and self.selection.matches(packet, ops=False):
                for event in self.flows.add(packet):
                    if self.on_event is not None:
                        self.on_event(event)
            if not self.selection.matches(packet):
                continue
            self.counts.matched += 1
            if self.writer is not None:
                self.writer.add(time_ns, data, frame_bytes)
            if self.on_packet is not None:
                self.on_packet(packet)
            if self.done:
                return
