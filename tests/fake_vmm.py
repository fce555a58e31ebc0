"""FakeVmm: a stand-in for the Unix-socket multiplexer of Firecracker / Cloud Hypervisor.

A fake, because no such VMM runs here. Written from Firecracker's vsock
documentation (docs/vsock.md, "host-initiated connections"): the host
connects to the VMM's ``uds_path`` and writes ``CONNECT <port>\\n``; the VMM
opens a connection to the guest's listener on that port and answers
``OK <host_port>\\n``, after which the Unix socket carries the stream both
ways; when nothing listens in the guest the VMM closes the Unix connection
without answering. Guest-initiated connections to CID 2 port P are forwarded
by the VMM to the Unix socket ``<uds_path>_<P>``.

``guest_connect(port)`` plays the guest: it returns a connected socket (a
Unix socket on the host tier, real vsock in the VM) or None when nothing
listens. A :class:`Mode` other than ``OK`` makes the fake misbehave.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

GuestConnect = Callable[[int], "socket.socket | None"]


class Mode(StrEnum):
    """How the fake VMM answers ``CONNECT <port>``."""

    OK = "ok"  # as Firecracker does
    CLOSE = "close"  # closes without an answer, as when nothing listens in the guest
    GARBAGE = "garbage"  # a line that is not OK
    SILENT = "silent"  # keeps the connection open and says nothing
    OVERLONG = "overlong"  # an OK line longer than any real one
    PARTIAL = "partial"  # the start of an OK line, then a close


def pipe_both_ways(a: socket.socket, b: socket.socket) -> list[threading.Thread]:
    """Copy a to b and b to a, passing each half-close on, until both directions end."""

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    threads = [
        threading.Thread(target=pump, args=(a, b), daemon=True),
        threading.Thread(target=pump, args=(b, a), daemon=True),
    ]
    for thread in threads:
        thread.start()
    return threads


class FakeVmm:
    """Accepts on ``uds_path``, answers ``CONNECT``, relays to the guest."""

    def __init__(self, uds_path: Path, guest_connect: GuestConnect, mode: Mode = Mode.OK) -> None:
        self.uds_path = uds_path
        self.guest_connect = guest_connect
        self.mode = mode
        self.requests: list[bytes] = []
        self._ports = itertools.count(1073741824)  # Firecracker's first host-side port
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(uds_path))
        self._server.listen(16)
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_line(self, conn: socket.socket) -> bytes:
        line = b""
        while not line.endswith(b"\n") and len(line) < 64:
            byte = conn.recv(1)
            if not byte:
                break
            line += byte
        return line

    def _serve(self, conn: socket.socket) -> None:
        line = self._read_line(conn)
        self.requests.append(line)
        if self.mode is Mode.SILENT:
            return
        if self.mode is Mode.GARBAGE:
            conn.sendall(b"HELLO THERE\n")
            conn.close()
            return
        if self.mode is Mode.OVERLONG:
            conn.sendall(b"OK " + b"9" * 100)
            return
        if self.mode is Mode.PARTIAL:
            conn.sendall(b"OK 10")
            conn.close()
            return
        parts = line.split()
        guest = None
        if (
            self.mode is Mode.OK
            and len(parts) == 2
            and parts[0] == b"CONNECT"
            and parts[1].isdigit()
        ):
            guest = self.guest_connect(int(parts[1]))
        if guest is None:  # nothing listens in the guest (or Mode.CLOSE)
            conn.close()
            return
        self._open.append(guest)
        conn.sendall(f"OK {next(self._ports)}\n".encode())
        pipe_both_ways(conn, guest)

    def close(self) -> None:
        self._server.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()
        with contextlib.suppress(OSError):
            self.uds_path.unlink()

    def __enter__(self) -> FakeVmm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_or_none(family: int, address: str | tuple[int, int]) -> socket.socket | None:
    """A stream connected to ``address``, or None when nothing accepts there."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        return None
    return sock


def unix_guest(directory: Path) -> GuestConnect:
    """A guest whose port P is the Unix socket ``directory/guest_P`` (host-tier tests)."""
    return lambda port: connect_or_none(socket.AF_UNIX, str(directory / f"guest_{port}"))


def forward_guest_to_host(listener: socket.socket, host_path: str) -> threading.Thread:
    """The other half of the VMM: each connection a guest makes (accepted on ``listener``)
    goes to the host's Unix socket ``host_path`` (``<uds_path>_<P>``); none there, it is closed."""

    def run() -> None:
        while True:
            try:
                guest, _ = listener.accept()
            except OSError:
                return
            host = connect_or_none(socket.AF_UNIX, host_path)
            if host is None:
                guest.close()
                continue
            pipe_both_ways(guest, host)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
