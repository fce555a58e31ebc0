"""The peer's RESULT frame, read on the control connection while the data flows.

A receiver learns that a stream ended from the sender's half-close. A hybrid
vsock mux drops a guest's half-close (vhost-device-vsock 0.3, Firecracker,
Cloud Hypervisor before v53: see :mod:`vsockctl.vsock.hybrid`), so behind one
the stream never ends and both ends would wait for each other until the
control timeout. The sender's RESULT says how many bytes each of its streams
sent; a receiver that has them all is done (:attr:`Counter.until
<vsockctl.bench.pumps.Counter.until>`), half-close or not.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import threading
from typing import Any

from vsockctl.errors import Operation, ProtocolError, VsockError

from .protocol import FrameKind, recv_frame
from .pumps import Counter

POLL_STEP_MS = 200  # how often the watcher looks whether it may stop


class PeerResult:
    """Watches ``control`` for the peer's RESULT from the moment the data flows."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self._payload: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._stop = threading.Event()
        self._receivers: list[tuple[socket.socket, Counter]] = []

    def watch(self, receivers: list[tuple[socket.socket, Counter]]) -> None:
        """Start reading; ``receivers`` are this end's receiving streams in stream order."""
        self._receivers = receivers
        threading.Thread(target=self._run, name="peer-result", daemon=True).start()

    def stop(self) -> None:
        """Stop watching (the test was cut short)."""
        self._stop.set()

    def result(self, timeout: float) -> dict[str, Any]:
        """The peer's RESULT payload, waiting up to ``timeout`` seconds for it."""
        if not self._done.wait(timeout):
            self._stop.set()
            raise VsockError(
                errno.ETIMEDOUT,
                Operation.THROUGHPUT,
                None,
                f"the peer sent no RESULT frame within {timeout:g} s",
            )
        if self._error is not None:
            raise self._error
        assert self._payload is not None  # set before _done, when there is no error
        return self._payload

    def _run(self) -> None:
        try:
            if self._readable():
                _, self._payload = recv_frame(self.control, FrameKind.RESULT)
                self._end_receivers(self._payload)
        except (OSError, EOFError, ProtocolError) as exc:
            self._error = exc
        finally:
            self._done.set()

    def _readable(self) -> bool:
        poller = select.poll()
        poller.register(self.control, select.POLLIN)
        while not self._stop.is_set():
            if poller.poll(POLL_STEP_MS):
                return True
        return False

    def _end_receivers(self, payload: dict[str, Any]) -> None:
        """Tell each receiving stream how much its sender sent; wake one that already
        has it all but waits for a half-close that may never come."""
        sent = payload.get("sent", {}).get("streams", [])
        for (sock, counter), stream in zip(self._receivers, sent, strict=False):
            counter.until = int(stream.get("bytes", 0))
            if counter.bytes >= counter.until:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RD)
