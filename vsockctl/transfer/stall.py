"""Saying so when a transfer stops moving, instead of hanging without a word.

A sender blocks in the kernel when its peer grants no more credit: a receiver
that does not read, a paused VM, or a device that dropped a packet. One such
device is common enough to name: hybrid vsock devices that expect a packet's
data in one descriptor (vhost-device-vsock 0.3, through rust-vmm's
virtio-vsock crate; libkrun and Cloud Hypervisor until their fixes of early
2026) meet Linux guests that, since commit 6693731487a8 (6.17, and the stable
kernels it went back to: Debian's 6.12.95 here), put a packet over 32 KiB in
several descriptors. The device drops the packet without a word and the
connection stalls for good. Writes of at most 32 KiB (--buf-size 32K) keep
every packet in one descriptor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

STALL_AFTER = 10.0  # seconds one send may block before we say so
STALL_HINT = (
    "the receiver is not reading, the VM is paused, or the VMM dropped a packet "
    "(some hybrid vsock devices drop packets over 32 KiB from Linux 6.17 and recent stable "
    "guests: try --buf-size 32K)"
)


class StallWatch:
    """Calls ``stalled(seconds)`` once a single send has blocked for ``after`` seconds
    (``blocked_since`` gives when the send under way began, in monotonic seconds, or
    None between sends), and once more for each later stall."""

    def __init__(
        self,
        blocked_since: Callable[[], float | None],
        stalled: Callable[[float], None],
        after: float = STALL_AFTER,
    ) -> None:
        self.blocked_since = blocked_since
        self.stalled = stalled
        self.after = after
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="vsockctl-stall", daemon=True)

    def _watch(self) -> None:
        said_for: float | None = None  # the blocked send already reported
        while not self._stop.wait(min(1.0, self.after / 4)):
            since = self.blocked_since()
            if since is None or since == said_for:
                continue
            waited = time.monotonic() - since
            if waited >= self.after:
                said_for = since
                self.stalled(waited)

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
