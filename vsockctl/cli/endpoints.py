"""Opening the local ends of a transfer (files, stdin, stdout) and announcing sockets."""

from __future__ import annotations

import socket
import threading
from contextlib import ExitStack

from vsockctl.address import VsockAddress
from vsockctl.errors import LocalIOError
from vsockctl.sockets import local_address
from vsockctl.streams import Sink, Source, StreamSink, StreamSource
from vsockctl.system import read_local_cid

from .env import Env


def open_source(env: Env, path: str | None, stack: ExitStack) -> Source:
    """``path``, or stdin for ``-`` or nothing."""
    if path is None or path == "-":
        return StreamSource(env.stdin, "stdin")
    try:
        stream = stack.enter_context(open(path, "rb"))  # noqa: SIM115 (closed by the stack)
    except OSError as exc:
        raise LocalIOError.wrap(exc, "reading", path) from exc
    return StreamSource(stream, path)


def open_sink(env: Env, path: str | None, stack: ExitStack) -> Sink:
    """``path`` (created or truncated), or stdout for ``-`` or nothing.

    When the data go to stdout, JSON events move to stderr.
    """
    if path is None or path == "-":
        env.events_to_stderr = True
        return StreamSink(env.stdout, "stdout")
    try:
        stream = stack.enter_context(open(path, "wb", buffering=0))  # noqa: SIM115 (closed by the stack)
    except OSError as exc:
        raise LocalIOError.wrap(exc, "writing", path) from exc
    return StreamSink(stream, path)


class LockedSink:
    """A sink shared by several connections, one write at a time."""

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


def announce_listening(env: Env, server: socket.socket, what: str) -> VsockAddress:
    """Say where ``server`` listens (with the port the kernel picked) and the local CID."""
    bound = local_address(server)
    local_cid, _ = read_local_cid(env.probe_paths)
    if env.json:
        env.emit(
            {
                "event": "listening",
                "address": str(bound),
                "cid": bound.cid,
                "port": bound.port,
                "local_cid": local_cid,
            }
        )
    else:
        cid_note = f" (this machine's CID is {local_cid})" if local_cid is not None else ""
        env.message(f"listening on {bound}{cid_note}, {what}")
    return bound


def announce_connection(env: Env, event: str, peer: VsockAddress, local: VsockAddress) -> None:
    if env.json:
        env.emit({"event": event, "peer": str(peer), "local": str(local)})
    elif env.verbose or event == "accepted":
        verb = "connection from" if event == "accepted" else "connected to"
        env.message(f"{verb} {peer}")
