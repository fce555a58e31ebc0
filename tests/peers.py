"""What tests share to run things for real: vsockctl as a process (``vsockctl``,
``run_vsockctl``), peers such as socat and ncat (``process``), ports no other
test worker takes (``free_port``), test data and its digest, Unix sockets, and a
vsock ``Listener``.

The vsock helpers reach only CID 1 (loopback) and serve tests marked ``vsock``,
``nested`` or ``hybrid``, which run in the VM tier; the rest serve the host
tier's tests too (over Unix sockets and pipes).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.constants import VMADDR_CID_LOCAL
from vsockctl.vsock.sockets import SocketType, accept, connect_with_retry, listen

LOCAL = VMADDR_CID_LOCAL
# 1000 ports per process: xdist's workers have neighbouring pids, and blocks of 100 let
# a busy worker walk into the next one's. Below 65536: ssh (ProxyCommand's %p) and
# socat's TCP take 16-bit ports.
_next_port = [10_000 + (os.getpid() % 50) * 1000]


def free_port() -> int:
    """A port for a peer that must be told its port before it binds."""
    _next_port[0] += 1
    return _next_port[0]


def pattern(size: int, seed: int = 1) -> bytes:
    """Deterministic, non-repeating-looking test data."""
    out = bytearray()
    block = seed.to_bytes(8, "little")
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def connect_when_listening(
    address: VsockAddress, sock_type: SocketType = SocketType.STREAM, deadline: float = 20.0
) -> socket.socket:
    """Connect once a peer process that is starting up listens on ``address``.

    Peers like ``socat VSOCK-LISTEN`` serve one connection, so the connection
    that succeeds is the one to use, not a probe.
    """
    retries = int(deadline / 0.05)
    return connect_with_retry(address, sock_type, timeout=2.0, retries=retries, retry_delay=0.05)


def try_unix(path: Path | str) -> socket.socket | None:
    """A connection to the Unix socket ``path``, or None while nothing accepts there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


@contextmanager
def process(args: Sequence[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(list(args), **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        stop_process(proc)


def recv_all(sock: socket.socket, bufsize: int = 256 * 1024) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(bufsize)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class Listener:
    """Our own listening socket on CID 1, serving one connection on a thread."""

    def __init__(self, sock_type: SocketType = SocketType.STREAM) -> None:
        self.sock = listen(VsockAddress(LOCAL, 0xFFFFFFFF), sock_type)
        self.address = VsockAddress(LOCAL, self.sock.getsockname()[1])
        self.received: list[bytes] = []
        self.error: BaseException | None = None

    def serve(self, reply: bytes | None = None, messages: bool = False) -> threading.Thread:
        def run() -> None:
            try:
                conn, _ = accept(self.sock)
                with conn:
                    if reply is not None:
                        conn.sendall(reply)
                        conn.shutdown(socket.SHUT_WR)
                    if messages:
                        while msg := conn.recv(1 << 20):
                            self.received.append(msg)
                    else:
                        self.received.append(recv_all(conn))
            except BaseException as exc:  # handed to the test thread
                self.error = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.sock.close()


def vsockctl_args(*args: str) -> list[str]:
    """The command line of ``vsockctl ARGS`` as its own process (this Python, the checkout's)."""
    return [sys.executable, "-m", "vsockctl", *args]


def vsockctl(*args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    """Start ``vsockctl ARGS`` as its own process."""
    return subprocess.Popen(vsockctl_args(*args), **kwargs)  # type: ignore[call-overload, no-any-return]


def run_vsockctl(
    *args: str, timeout: float = 120, **kwargs: object
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        vsockctl_args(*args), capture_output=True, timeout=timeout, **kwargs
    )


def write_pattern_file(path: Path, size: int, seed: int = 1) -> str:
    """Write ``size`` bytes of :func:`pattern` in pieces; return their SHA-256."""
    digest = hashlib.sha256()
    block = pattern(1 << 20, seed)
    with path.open("wb") as out:
        left = size
        while left:
            piece = block[: min(left, len(block))]
            out.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def start_throughput_server(*extra: str) -> tuple[subprocess.Popen[bytes], int]:
    """``vsockctl throughput server`` (JSON events on stdout), once it says where it listens."""
    server = vsockctl(
        "--json",
        "throughput",
        "server",
        *(extra or ("--port", "any")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert server.stdout is not None
    first = json.loads(server.stdout.readline())
    assert first["event"] == "listening", first
    return server, int(first["port"])


def read_until_listening(stream: IO[bytes] | None) -> dict[str, Any]:
    """The ``listening`` record of a ``--json`` command, past the ``sockopt`` ones before it."""
    assert stream is not None
    while line := stream.readline():
        record: dict[str, Any] = json.loads(line)
        if record["event"] == "listening":
            return record
    raise AssertionError("the command ended without listening")


def keep_reading(stream: IO[bytes] | None) -> threading.Thread:
    """Read ``stream`` to its end on a thread: a server printing a record per connection
    must not block on a full pipe nobody reads."""
    assert stream is not None
    thread = threading.Thread(target=stream.read, daemon=True)
    thread.start()
    return thread


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` if it still runs, reap it, close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
