"""Peers for the forward tests: a target that answers with a digest, a forwarder in a
thread or as its own process.

Shared by the host tier (Unix sockets only) and the VM tier (vsock over CID 1,
TCP on 127.0.0.1 and ::1).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.peers import recv_all, stop_process, vsockctl
from vsockctl.forward.flow import Flow, Refusal
from vsockctl.forward.server import Forwarder
from vsockctl.forward.sides import Side, listen_side


@dataclass
class Recorder:
    """An Observer that keeps every event, for the test to look at."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._changed = threading.Condition(self._lock)

    def _add(self, kind: str, what: Any) -> None:
        with self._changed:
            self.events.append((kind, what))
            self._changed.notify_all()

    def opened(self, flow: Flow) -> None:
        self._add("opened", flow)

    def closed(self, flow: Flow) -> None:
        self._add("closed", flow)

    def failed(self, peer: str, target: str, error: BaseException) -> None:
        self._add("failed", error)

    def refused(self, peer: str, reason: Refusal, why: str) -> None:
        self._add("refused", why)

    def of(self, kind: str) -> list[Any]:
        with self._lock:
            return [what for k, what in self.events if k == kind]

    def wait_for(self, kind: str, count: int, timeout: float = 60) -> list[Any]:
        """The first ``count`` events of ``kind``, once there are that many."""
        with self._changed:
            self._changed.wait_for(
                lambda: sum(1 for k, _ in self.events if k == kind) >= count, timeout
            )
        found = self.of(kind)
        assert len(found) >= count, (kind, count, self.events)
        return found[:count]


class DigestServer:
    """Each connection: read to the end, answer with the SHA-256 of what came, close.

    ``reply`` (bytes) is sent first when given, before reading anything.
    """

    def __init__(self, listener: socket.socket, reply: bytes = b"") -> None:
        self.listener = listener
        self.listener.settimeout(0.1)  # a vsock listener's accept ignores shutdown: poll
        self.reply = reply
        self.closed = False
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            if self.reply:
                conn.sendall(self.reply)
            conn.sendall(hashlib.sha256(recv_all(conn)).digest())

    def close(self) -> None:
        """Stop listening and cut every connection (the target going away)."""
        self.closed = True
        self.thread.join(5)
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def digest_through(connect: Callable[[], socket.socket], payload: bytes) -> bytes:
    """Send ``payload``, half-close, and return everything that comes back (nothing when
    the forwarder closes the connection first)."""
    with connect() as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            return recv_all(sock)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                raise
            return b""


@contextlib.contextmanager
def forwarding(
    listen: Side, target: Side, **options: Any
) -> Iterator[tuple[Forwarder, Recorder, socket.socket]]:
    """A Forwarder serving ``listen`` on a thread; stopped and closed afterwards."""
    recorder = Recorder()
    with listen_side(listen, 256, socket.socket) as listener:
        forwarder = Forwarder(listener, listen, target, recorder, **options)
        thread = threading.Thread(target=forwarder.serve, daemon=True)
        thread.start()
        try:
            yield forwarder, recorder, listener
        finally:
            forwarder.stop()
            thread.join(10)


class ForwardProcess:
    """``vsockctl --json forward ...`` as its own process, its records read as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = vsockctl(
            "--json", "forward", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.records: list[dict[str, Any]] = []
        self._up = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._up.wait(120):
            stop_process(self.proc)
            raise AssertionError(f"forward {args} did not start")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            record = json.loads(line)
            self.records.append(record)
            if record["event"] in ("forwarding", "error"):
                self._up.set()

    def listening(self) -> str:
        return str(next(r["listen"] for r in self.records if r["event"] == "forwarding"))

    def stop(self) -> tuple[int, list[dict[str, Any]], bytes]:
        """SIGTERM; its exit status, every record, and stderr."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.wait(timeout=60)
        self._reader.join(10)
        stop_process(self.proc)  # closes its pipes
        return self.proc.returncode, self.records, err
