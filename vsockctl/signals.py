"""SIGTERM and SIGHUP handled the way Ctrl-C is, and none of them losing received bytes.

systemd, container runtimes and ``timeout(1)`` stop a program with SIGTERM; a
closing terminal sends SIGHUP. Python's default for both is to die on the spot:
no flush, no stats, socket files left behind. Within :func:`stop_signals_raise`
each becomes a :class:`Terminated` exception, a kind of
:class:`KeyboardInterrupt`, raised in the main thread wherever it is blocked,
so every path that already cleans up after Ctrl-C (partial stats, flushing
what arrived, removing socket files) does the same for them. The exit status
is 128 + the signal's number.

An exception raised the moment a ``recv`` returns would drop the bytes it just
read. So a receive loop runs inside :func:`stop_after_loop`: there a stop
signal (Ctrl-C too) shuts the loop's sockets down instead of raising, the loop
writes what it holds and sees the end of the stream, and the exception is
raised when the loop is left.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# Main thread only: the sockets of the receive loops running now, and a stop
# that arrived while they ran.
_loops: list[tuple[socket.socket, ...]] = []
_pending: list[KeyboardInterrupt] = []
_stopping: list[int] = []  # the signals raised so far


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by ``signum`` (SIGTERM or SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _on_stop(signum: int, frame: FrameType | None) -> None:
    stop = KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)
    if _loops and not _pending:  # end the receive loop cleanly, raise when it is left
        _pending.append(stop)
        for socks in _loops:
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        return
    if _stopping and not _loops and signum != signal.SIGINT:
        return  # a stop is being cleaned up after: a second SIGTERM must not cut that short
    # First stop outside a receive loop, or a second one while a loop is stuck (on a
    # full pipe, say): now.
    _stopping.append(signum)
    raise stop


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` (and SIGINT
    KeyboardInterrupt) in the main thread, deferred inside :func:`stop_after_loop`.

    The previous handlers come back afterwards. Off the main thread (where
    Python cannot install handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {stop: signal.getsignal(stop) for stop in STOP_SIGNALS}
    for stop in STOP_SIGNALS:
        signal.signal(stop, _on_stop)
    try:
        yield
    finally:
        _pending.clear()
        _stopping.clear()
        for stop, handler in previous.items():
            signal.signal(stop, handler)


def stop_pending() -> bool:
    """Whether a stop signal came during :func:`stop_after_loop` (for a loop that cannot be
    shut down from outside, such as a packet socket's, to end itself)."""
    return bool(_pending)


@contextlib.contextmanager
def stop_after_loop(*socks: socket.socket) -> Iterator[None]:
    """Run a receive loop on ``socks`` so that a stop signal ends it cleanly.

    A signal during the block shuts ``socks`` down (the loop sees the end of
    the stream after the bytes in hand) and is raised when the block ends.
    Only on the main thread, where signal handlers run; elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _loops.append(socks)
    try:
        yield
    finally:
        _loops.pop()
        if _pending and not _loops:
            stop = _pending.pop()
            _stopping.append(stop.signum if isinstance(stop, Terminated) else signal.SIGINT)
            raise stop
