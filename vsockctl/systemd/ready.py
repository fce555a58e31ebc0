"""The host end of a guest's sd_notify over vsock: wait for ``READY=1``.

systemd (v254+) in a guest sends its notifications to the address of the
``vmm.notify_socket`` credential: ``vsock:CID:PORT`` tries a datagram, then a
seqpacket message; ``vsock-stream:CID:PORT`` connects a stream, writes the
message and closes. Behind a hybrid VMM (Firecracker, Cloud Hypervisor) the
guest's connection to CID 2 PORT arrives on the Unix socket ``PATH_PORT``.
A message is ``KEY=VALUE`` lines: ``READY=1``, ``STATUS=...``,
``X_SYSTEMD_UNIT_ACTIVE=...``, ``STOPPING=1``.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

from vsockctl.errors import VsockError, VsockUnavailableError
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.constants import VMADDR_PORT_ANY
from vsockctl.vsock.hybrid import listener_path, unix_listener
from vsockctl.vsock.sockets import SocketFactory, SocketType, listen

MAX_MESSAGE = 64 * 1024  # sd_notify's messages are a few lines
READ_TIMEOUT = 5.0  # a stream sender writes its message and closes at once
QUIET = 0.5  # seconds of silence that end a stream's message when no end comes


@dataclass(frozen=True)
class Notification:
    """One message: who sent it, how, and its fields in order."""

    peer: str
    socket_type: str
    fields: list[tuple[str, str]]

    @property
    def ready(self) -> bool:
        return ("READY", "1") in self.fields


def parse(message: bytes) -> list[tuple[str, str]]:
    """``KEY=VALUE`` lines (a line without ``=`` is kept with an empty value)."""
    lines = message.decode(errors="replace").split("\n")
    return [(key, value) for key, _, value in (line.partition("=") for line in lines if line)]


@dataclass
class ReadyListener:
    """Listeners on one port (or a hybrid ``PATH_PORT``) for the ways systemd sends:
    datagrams where the transport has them (VMCI; left out elsewhere, and said why
    in :attr:`unavailable`), and ``connected``: seqpacket (``vsock:``, where no
    datagrams go) or stream (``vsock-stream:``). vsock's stream and seqpacket
    sockets share one port space, so a port serves one of the two."""

    port: int
    cid: int
    uds: str | None = None
    factory: SocketFactory = socket.socket
    connected: SocketType = SocketType.SEQPACKET
    opened: dict[str, socket.socket] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    _stack: ExitStack = field(default_factory=ExitStack)

    def __enter__(self) -> ReadyListener:
        try:
            if self.uds is not None:
                path = listener_path(self.uds, self.port)
                self.opened["stream"] = self._stack.enter_context(unix_listener(path, 16))
                return self
            self.opened[self.connected.value] = self._stack.enter_context(
                self._open(self.connected)
            )
            try:
                self.opened["dgram"] = self._stack.enter_context(self._open(SocketType.DGRAM))
            except (VsockError, VsockUnavailableError) as exc:
                self.unavailable["dgram"] = (
                    f"{exc.meaning.name}: {exc.meaning.cause}"
                    if isinstance(exc, VsockError)
                    else str(exc)
                )
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _open(self, kind: SocketType) -> socket.socket:
        sock = listen(VsockAddress(self.cid, self.port), kind, 16, self.factory)
        if self.port == VMADDR_PORT_ANY:  # the others go on the port this one got
            self.port = int(sock.getsockname()[1])
        return sock

    def notifications(self, deadline: float) -> Iterator[Notification]:
        """Each message as it comes, until ``deadline`` (time.monotonic())."""
        kinds = {sock.fileno(): kind for kind, sock in self.opened.items()}
        poller = select.poll()
        for sock in self.opened.values():
            poller.register(sock, select.POLLIN)
        while (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(min(left, 0.2) * 1000):
                kind = kinds[fd]
                got = self._receive(self.opened[kind], kind)
                if got is not None:
                    yield got

    def _receive(self, sock: socket.socket, kind: str) -> Notification | None:
        if kind == "dgram":
            data, peer = sock.recvfrom(MAX_MESSAGE)
            return Notification(_shown(peer), kind, parse(data))
        conn, peer = sock.accept()
        with conn:
            conn.settimeout(READ_TIMEOUT)
            try:
                data = conn.recv(MAX_MESSAGE) if kind == "seqpacket" else _read_to_end(conn)
            except OSError:  # a sender that stalled or reset: no message from it
                return None
        return Notification(_shown(peer), kind, parse(data))


def _read_to_end(conn: socket.socket) -> bytes:
    """A stream's message: to its end, or (behind a hybrid mux, which drops the guest's
    half-close) until it has been quiet for :data:`QUIET` seconds after some bytes."""
    data = bytearray()
    try:
        while len(data) < MAX_MESSAGE and (chunk := conn.recv(MAX_MESSAGE - len(data))):
            data += chunk
            conn.settimeout(QUIET)
    except TimeoutError:
        if not data:
            raise
    return bytes(data)


def _shown(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) == 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) or "(unix peer)"
