"""``vsockctl listen``: netcat's server side for vsock.

Sample (stderr)::

    listening on any:5000 (this machine's CID is 3), one client
    connection from 1:49152
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from contextlib import ExitStack

import click

from vsockctl.errors import VsockError
from vsockctl.events.transfer import Closed, Exec
from vsockctl.transfer.engine import Transfer
from vsockctl.transfer.stats import TransferStats
from vsockctl.transfer.streams import Sink, Source
from vsockctl.vsock.address import Endpoint
from vsockctl.vsock.sockets import SocketType, accept, local_address
from vsockctl.vsock.sockopt_apply import SocketOptions

from .app import cli
from .endpoints import (
    LockedSink,
    announce_connection,
    announce_listening,
    open_listener,
    open_sink,
    open_source,
)
from .env import Env, current_env
from .errors import describe
from .format import plural
from .options import (
    LOCAL_FILE,
    WholeRange,
    activatable_address_options,
    connected_type_option,
    given,
    listener_sockopt_option,
    output_options,
)
from .peer import listen_route, uds_listen_option
from .service import inherited, notifying, vsock_port_matches, with_activation_help
from .sockopt_view import vsock_factory
from .transfer_ui import report_stats

STOP_GRACE = 2.0  # seconds the clients being served get to close when the server stops


class Server:
    """Serves connections one way: relay, receive-only, or a command per connection."""

    def __init__(
        self,
        env: Env,
        *,
        sock_type: SocketType,
        sink: Sink,
        source: Source | None,
        command: str | None,
        keep_going: bool,
        mux: bool = False,
    ) -> None:
        self.env = env
        self.mux = mux  # clients arrive through a hybrid vsock mux, which cannot half-close
        self.sock_type = sock_type
        self.sink = sink
        self.source = source
        self.command = command
        self.keep_going = keep_going  # report a connection's error and serve the next
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()  # connections being served
        self._children: set[subprocess.Popen[bytes]] = set()  # --exec commands running
        self.served = 0  # connections accepted

    def status(self) -> str:
        """The counts, for systemd's STATUS=."""
        return f"{len(self._live)} connected, {self.served} served"

    def handle(self, conn: socket.socket, peer: Endpoint) -> None:
        stats = TransferStats()
        complete = False
        with self._lock:
            self._live.add(conn)
            self.served += 1
        try:
            with conn:
                announce_connection(self.env, "accepted", peer, local_address(conn))
                if self.command is not None:
                    self._exec(conn, peer)
                elif self.sock_type is SocketType.SEQPACKET and self.source is None:
                    Transfer(stats, address=peer).receive_messages(conn, self.sink)
                else:
                    Transfer(stats, address=peer).relay(
                        conn,
                        self.source,
                        self.sink,
                        source_interactive=self.env.io.stdin_isatty,
                        messages=self.sock_type is SocketType.SEQPACKET,
                        mux=self.mux,
                    )
            complete = True
        except (VsockError, OSError) as exc:
            if not self.keep_going:
                raise
            self.env.stderr.write(f"vsockctl: {peer}: {describe(exc)}\n")
        finally:
            with self._lock:
                self._live.discard(conn)
            stats.finish()
            self._closed(peer, stats, complete)

    def stop(self, threads: list[threading.Thread]) -> None:
        """End every connection still being served, so each reports how it closed."""
        with self._lock:
            for conn in self._live:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            for child in self._children:
                child.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))

    def _exec(self, conn: socket.socket, peer: Endpoint) -> None:
        fd = conn.fileno()
        with subprocess.Popen(
            ["/bin/sh", "-c", self.command or "true"], stdin=fd, stdout=fd
        ) as child:
            with self._lock:
                self._children.add(child)
            try:
                returncode = child.wait()
            except BaseException:  # Ctrl-C, SIGTERM: the command goes with us
                child.terminate()
                raise
            finally:
                with self._lock:
                    self._children.discard(child)
        if self.env.json:
            self.env.emit(Exec(event="exec", peer=str(peer), returncode=returncode))
        elif self.env.verbose:
            self.env.message(f"{peer}: command exited with {returncode}")

    def _closed(self, peer: Endpoint, stats: TransferStats, complete: bool) -> None:
        """The connection's stats: with --json always; as a line with -v, or when a relay
        failed or was interrupted."""
        if self.env.json:
            self.env.emit(Closed(event="closed", peer=str(peer), **stats.to_record()))
        elif self.env.verbose or (not complete and self.command is None):
            report_stats(self.env, stats, complete)


@with_activation_help
@cli.command(name="listen", short_help="Listen on a port; relay, receive, or --exec per client.")
@activatable_address_options
@connected_type_option
@click.option(
    "-o",
    "--output",
    type=LOCAL_FILE,
    help="Write what clients send to this file instead of stdout.",
)
@click.option(
    "-k",
    "--keep-open/--once",
    default=False,
    help="--once (the default): serve one client, then exit. -k: serve one client "
    "after another (stdin is not relayed; use --exec to answer).",
)
@click.option(
    "--max-clients",
    type=WholeRange(min=1),
    default=1,
    show_default=True,
    help="Serve up to N clients at once (implies --keep-open).",
)
@click.option(
    "-e",
    "--exec",
    "command",
    metavar="CMD",
    help="Run CMD (with /bin/sh -c) per connection, the socket as its stdin and stdout.",
)
@uds_listen_option
@listener_sockopt_option
@output_options
def listen_command(
    *,
    port: int | None,
    cid: int,
    sock_type: SocketType,
    output: str | None,
    keep_open: bool,
    max_clients: int,
    command: str | None,
    uds: str | None,
    sockopts: SocketOptions,
) -> None:
    """Listen on PORT; relay stdin to the client and the client to stdout.

    By default serves one client (--once) and exits when it is done, like
    netcat. -k serves clients one after another, --max-clients several at
    once; then what clients send goes to stdout (or --output) and stdin is not
    read. --exec runs a command per connection instead. Stop with Ctrl-C
    (exit 130); a relay cut short prints its stats. With the data on stdout,
    --json records go to stderr; an --output file keeps its old bytes until
    new ones arrive.

    {activation}

    \b
    Examples:
      vsockctl listen --port 5000 > received.bin
      vsockctl listen --port 5000 -k --exec 'cat'       an echo service
      vsockctl listen --port 2222 -k --exec '/bin/sh -i 2>&1'   a shell (trusted VMs only)
      vsockctl listen --port any --json
    """
    env = current_env()
    if given("keep_open") and not keep_open and max_clients > 1:
        raise click.UsageError("--once serves one client, --max-clients several: give one")
    if command is not None and not command.strip():
        raise click.UsageError("--exec needs a command (for example --exec cat)")
    if command is not None and output is not None:
        raise click.UsageError(
            "--exec hands each client to the command, so -o would get nothing; "
            "redirect the command's own output instead"
        )
    keep_going = keep_open or max_clients > 1
    with ExitStack() as stack:
        sink = open_sink(env, output, stack)
        source = None
        if not keep_going and command is None:
            source = open_source(env, "-", stack)
        passed = inherited("listen", sock_type.number)
        if passed is not None:
            server_sock = stack.enter_context(passed)
            if uds is not None:
                raise click.UsageError("systemd passes the socket: drop --uds")
            vsock_port_matches(passed, cid if given("cid") else None, port)
            route = listen_route(cid, local_address(passed).port, None, sock_type)
        elif port is None:
            raise click.UsageError("Missing option '--port' (or a socket from systemd).")
        else:
            route = listen_route(cid, port, uds, sock_type)
            server_sock = open_listener(
                stack,
                route,
                sock_type,
                vsock_factory(env, sockopts),
                backlog=max(max_clients, socket.SOMAXCONN),
            )
        what = "one client" if not keep_going else f"up to {plural(max_clients, 'client')} at once"
        announce_listening(env, server_sock, what)
        server = Server(
            env,
            sock_type=sock_type,
            sink=LockedSink(sink) if max_clients > 1 else sink,
            source=source,
            command=command,
            keep_going=keep_going,
            mux=route.uds is not None,
        )
        notifier = stack.enter_context(notifying(env))
        notifier.ready(server.status)
        if not keep_going:
            conn, peer = accept(server_sock)
            server.handle(conn, peer)
            return
        _serve_forever(server, server_sock, max_clients)


def _serve_forever(server: Server, server_sock: socket.socket, max_clients: int) -> None:
    """Accept and serve until stopped: here with one client at a time, else a thread each."""
    slots = threading.BoundedSemaphore(max_clients)
    threads: list[threading.Thread] = []
    try:
        while True:
            slots.acquire()
            conn, peer = accept(server_sock)

            def serve(conn: socket.socket = conn, peer: Endpoint = peer) -> None:
                try:
                    server.handle(conn, peer)
                finally:
                    slots.release()

            if max_clients == 1:
                serve()
                continue
            threads = [t for t in threads if t.is_alive()]
            thread = threading.Thread(target=serve, daemon=True)
            thread.start()
            threads.append(thread)
    finally:  # Ctrl-C, SIGTERM: the clients being served get their closed lines too
        server.stop(threads)
