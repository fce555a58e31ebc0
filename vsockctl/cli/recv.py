"""``vsockctl recv``: listen, receive one transfer into a file or stdout, check it."""

from __future__ import annotations

from contextlib import ExitStack

import click

from vsockctl.errors import DataMismatchError
from vsockctl.transfer.engine import Transfer
from vsockctl.transfer.stats import TransferStats
from vsockctl.vsock.sockets import SocketType, accept, local_address
from vsockctl.vsock.sockopt_apply import SocketOptions

from .app import cli
from .endpoints import announce_connection, announce_listening, open_listener, open_sink
from .env import current_env
from .options import (
    DURATION,
    LOCAL_FILE,
    SIZE,
    given,
    listen_address_options,
    listener_sockopt_option,
    output_options,
    socket_type_option,
)
from .peer import listen_route, uds_listen_option
from .sockopt_view import vsock_factory
from .transfer_ui import TransferDisplay, reporting


def _check_hex(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    digest = value.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise click.BadParameter(f"{value!r} is not a SHA-256 digest (64 hex digits)")
    return digest


@cli.command("recv", short_help="Receive one transfer into a file or stdout, and check it.")
@click.argument("file", required=False, type=LOCAL_FILE)
@listen_address_options
@socket_type_option
@click.option("--sha256", is_flag=True, help="Print the SHA-256 of what was received.")
@click.option("--expect-bytes", type=SIZE, help="Fail (exit 6) unless exactly this much arrives.")
@click.option(
    "--expect-sha256",
    callback=_check_hex,
    metavar="HEX",
    help="Fail (exit 6) unless the data have this SHA-256.",
)
@click.option(
    "--timeout",
    type=DURATION,
    help="Give up (exit 5) when no sender connects within this time.",
)
@click.option(
    "--buf-size",
    type=SIZE,
    default="1M",
    show_default=True,
    help="Bytes per receive call (stream).",
)
@uds_listen_option
@listener_sockopt_option
@output_options
def recv_command(
    *,
    file: str | None,
    port: int,
    cid: int,
    sock_type: SocketType,
    sha256: bool,
    expect_bytes: int | None,
    expect_sha256: str | None,
    timeout: float | None,
    buf_size: int,
    uds: str | None,
    sockopts: SocketOptions,
) -> None:
    """Receive one transfer on PORT into FILE (or stdout), then report and check it.

    Listens, accepts one sender, writes everything it sends until it closes,
    and prints bytes, time and rate on stderr. With --expect-bytes or
    --expect-sha256 the exit status says whether the data arrived intact.
    On seqpacket, the messages and their sizes are counted. With no FILE (or
    -) the data go to stdout, and --json records to stderr.

    FILE keeps its old bytes until new ones arrive: a failed bind, a timeout,
    Ctrl-C before a sender, or a sender that sends nothing leave it as it was.

    \b
    Examples:
      vsockctl recv --port 5000 disk.img
      vsockctl recv --port 5000 | tar x
      vsockctl recv --port 5000 copy.bin --expect-sha256 "$(sha256sum orig | cut -c1-64)"
      vsockctl recv --port any --json /dev/null
    """
    env = current_env()
    if given("buf_size") and sock_type is not SocketType.STREAM:
        raise click.UsageError("--buf-size is for streams; each message is received whole")
    if buf_size < 1:
        raise click.UsageError("--buf-size must be at least 1 byte")
    with ExitStack() as stack:
        sink = open_sink(env, file, stack)
        route = listen_route(cid, port, uds, sock_type)
        factory = vsock_factory(env, sockopts)
        server = open_listener(stack, route, sock_type, factory, backlog=1)  # one sender
        announce_listening(env, server, "waiting for one sender")
        if timeout is not None:
            server.settimeout(timeout)
        if sock_type.connected:
            conn, peer = accept(server)
            conn.settimeout(None)
            stack.enter_context(conn)
            announce_connection(env, "accepted", peer, local_address(conn))
        else:
            conn, peer = server, local_address(server)
        stats = TransferStats()
        display = stack.enter_context(TransferDisplay(env, f"from {peer}", expect_bytes))
        digest = sha256 or expect_sha256 is not None
        transfer = Transfer(stats, sha256=digest, progress=display.update, address=peer)
        with reporting(env, stats):
            if sock_type is SocketType.STREAM:
                transfer.receive_stream(conn, sink, buf_size)
            else:
                transfer.receive_messages(conn, sink)
            stats.finish()
        _check(stats, expect_bytes, expect_sha256)


def _check(stats: TransferStats, expect_bytes: int | None, expect_sha256: str | None) -> None:
    if expect_bytes is not None and stats.received_bytes != expect_bytes:
        raise DataMismatchError(f"received {stats.received_bytes} bytes, expected {expect_bytes}")
    if expect_sha256 is not None and stats.received_sha256 != expect_sha256:
        raise DataMismatchError(
            f"received data have SHA-256 {stats.received_sha256}, expected {expect_sha256}"
        )
