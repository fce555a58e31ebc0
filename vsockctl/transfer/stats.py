"""What a transfer moved: bytes, messages and digests, and when it started and ended.

The engine (:mod:`vsockctl.transfer.engine`) fills a :class:`TransferStats` as
bytes move, so a caller can report partial results after an error or Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # an annotation only: the record loads when --json prints one
    from vsockctl.events.transfer import Moved


@dataclass
class TransferStats:
    """What moved, in bytes and nanoseconds; filled in while it moves."""

    sent_bytes: int = 0
    received_bytes: int = 0
    sent_messages: int = 0
    received_messages: int = 0
    truncated_messages: int = 0
    message_sizes: dict[int, int] = field(default_factory=dict)
    sent_sha256: str | None = None
    received_sha256: str | None = None
    started_ns: int = field(default_factory=time.monotonic_ns)
    finished_ns: int | None = None

    def finish(self) -> None:
        if self.finished_ns is None:
            self.finished_ns = time.monotonic_ns()

    @property
    def elapsed_ns(self) -> int:
        end = self.finished_ns if self.finished_ns is not None else time.monotonic_ns()
        return max(end - self.started_ns, 1)

    @property
    def moved_bytes(self) -> int:
        return self.sent_bytes + self.received_bytes

    def rate(self) -> float:
        """Bytes per second over the whole transfer, both directions."""
        return self.moved_bytes * 1e9 / self.elapsed_ns

    def to_record(self) -> Moved:
        record: Moved = {
            "sent_bytes": self.sent_bytes,
            "received_bytes": self.received_bytes,
            "elapsed_ns": self.elapsed_ns,
            "bytes_per_second": round(self.rate()),
            "sent_sha256": self.sent_sha256,
            "received_sha256": self.received_sha256,
        }
        if self.sent_messages or self.received_messages:
            record["sent_messages"] = self.sent_messages
            record["received_messages"] = self.received_messages
            record["truncated_messages"] = self.truncated_messages
            record["message_sizes"] = {str(k): v for k, v in sorted(self.message_sizes.items())}
        return record


OnProgress = Callable[[TransferStats], None]
