"""Opening the local ends of a transfer (files, stdin, stdout) and announcing sockets."""

from __future__ import annotations

import io
import socket
import threading
from contextlib import ExitStack
from typing import BinaryIO, Literal, cast

import click

from vsockctl.discover.system import read_local_cid
from vsockctl.errors import LocalIOError
from vsockctl.events.transfer import Accepted, Connected, Listening
from vsockctl.transfer.streams import OutputFile, Sink, Source, StreamSink, StreamSource
from vsockctl.vsock.address import Endpoint
from vsockctl.vsock.route import Route
from vsockctl.vsock.sockets import SocketFactory, SocketType, local_address

from .env import Env
from .peer import PeerOptions


def open_source(env: Env, path: str | None, stack: ExitStack) -> Source:
    """``path``, or stdin for ``-`` or nothing."""
    if path is None or path == "-":
        # unbuffered: a relay's reader thread blocked in a BufferedReader holds its lock,
        # and Python aborts at exit when it finds stdin's lock held (a peer gone mid-relay)
        return StreamSource(_unbuffered(env.stdin, stack, "rb"), "stdin")
    try:
        stream = stack.enter_context(open(path, "rb"))  # noqa: SIM115 (closed by the stack)
    except OSError as exc:
        raise LocalIOError.wrap(exc, "reading", path) from exc
    return StreamSource(stream, path)


def open_sink(env: Env, path: str | None, stack: ExitStack) -> Sink:
    """``path`` (an :class:`OutputFile`), or stdout for ``-`` or nothing.

    When the data go to stdout, JSON events move to stderr.
    """
    if path is None or path == "-":
        env.events_to_stderr = True
        return StreamSink(_unbuffered(env.stdout, stack, "wb"), "stdout")
    return stack.enter_context(OutputFile(path))


def _unbuffered(stream: BinaryIO, stack: ExitStack, mode: str) -> BinaryIO:
    """``stream``'s file descriptor used directly: chunks are large, a buffer would only
    copy them once more, and it has a lock (a stream with no descriptor, as under a
    test runner, stays as it is)."""
    try:
        fd = stream.fileno()
    except (OSError, AttributeError, io.UnsupportedOperation):
        return stream
    if "w" in mode:
        stream.flush()
    return cast(BinaryIO, stack.enter_context(open(fd, mode, buffering=0, closefd=False)))


class LockedSink:
    """A sink shared by several connections, one write at a time."""

    kernel_fd: int | None = None  # one write at a time: no splicing past the lock

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.name = sink.name
        self.lock = threading.Lock()

    def write(self, data: memoryview) -> None:
        with self.lock:
            self.sink.write(data)

    def flush(self) -> None:
        with self.lock:
            self.sink.flush()


def open_connection(
    env: Env, route: Route, sock_type: SocketType, peer: PeerOptions, factory: SocketFactory
) -> socket.socket:
    """Connect along ``route`` (vsock sockets from ``factory``), retrying as ``peer``
    says while nothing listens; say so."""
    if route.uds is not None and sock_type is not SocketType.STREAM:
        raise click.UsageError("hybrid vsock (--uds) carries streams only; use --type stream")
    sock = route.connect(
        sock_type,
        peer.timeout,
        retries=peer.retry,
        retry_delay=peer.retry_delay,
        factory=factory,
    )
    announce_connection(env, "connected", route.shown, local_address(sock))
    return sock


def open_listener(
    stack: ExitStack,
    route: Route,
    sock_type: SocketType,
    factory: SocketFactory,
    *,
    backlog: int = socket.SOMAXCONN,
) -> socket.socket:
    """A listening socket: vsock, or with --uds the hybrid listener PATH_PORT.

    The backlog defaults to SOMAXCONN: a burst of clients queues until accepted
    (vsock resets a connection that finds the accept queue full).
    """
    return stack.enter_context(route.listen(sock_type, backlog, factory))


def announce_listening(env: Env, server: socket.socket, what: str) -> Endpoint:
    """Say where ``server`` listens (with the port the kernel picked) and the local CID."""
    bound = local_address(server)
    local_cid, _ = read_local_cid(env.probe_paths)
    if env.json:
        env.emit(
            Listening(
                event="listening",
                address=str(bound),
                cid=bound.cid,
                port=bound.port,
                local_cid=local_cid,
            )
        )
    else:
        cid_note = f" (this machine's CID is {local_cid})" if local_cid is not None else ""
        env.message(f"listening on {bound}{cid_note}, {what}")
    return bound


def announce_connection(
    env: Env, event: Literal["accepted", "connected"], peer: Endpoint, local: Endpoint
) -> None:
    if env.json:
        if event == "accepted":
            env.emit(Accepted(event=event, peer=str(peer), local=str(local)))
        else:
            env.emit(Connected(event=event, peer=str(peer), local=str(local)))
    elif env.verbose or event == "accepted":
        verb = "connection from" if event == "accepted" else "connected to"
        env.message(f"{verb} {peer}")
