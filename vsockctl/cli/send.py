"""``vsockctl send``: one transfer to a listening peer, with stats and a checksum."""

from __future__ import annotations

import socket
from contextlib import ExitStack

import click

from vsockctl.transfer.engine import MESSAGE_SEND_CHUNK, Transfer
from vsockctl.transfer.stall import STALL_HINT, StallWatch
from vsockctl.transfer.stats import TransferStats
from vsockctl.transfer.streams import PATTERNS, PatternSource, Source
from vsockctl.vsock.hybrid import CLOSE_WAIT
from vsockctl.vsock.sockets import SocketType
from vsockctl.vsock.sockopt_apply import SocketOptions

from .app import cli
from .endpoints import open_connection, open_source
from .env import current_env
from .options import (
    CID,
    LOCAL_FILE,
    PORT,
    SIZE,
    WholeRange,
    given,
    output_options,
    socket_type_option,
    transfer_sockopt_option,
)
from .peer import PeerOptions, peer_options
from .sockopt_view import vsock_factory
from .transfer_ui import TransferDisplay, reporting


@cli.command("send", short_help="Send a file, stdin or generated data, with stats.")
@click.argument("file", required=False, type=LOCAL_FILE)
@click.option("--cid", type=CID, help="The receiver's CID.")
@click.option("--port", type=PORT, help="The receiver's port.")
@click.option("--to", "target", metavar="CID:PORT", help="The receiver, as CID:PORT.")
@socket_type_option
@click.option("--size", type=SIZE, help="Send this much generated data instead of a file.")
@click.option(
    "--pattern",
    type=click.Choice(PATTERNS),
    default="zero",
    show_default=True,
    help="Generated data: zero, random (seeded, repeatable) or counter (byte i = i mod 256).",
)
@click.option("--sha256", is_flag=True, help="Print the SHA-256 of what was sent.")
@click.option(
    "--message-size",
    type=SIZE,
    help="Send messages of this size (one send each; seqpacket keeps the boundaries).",
)
@click.option("--count", type=WholeRange(min=1), help="Stop after this many messages.")
@click.option(
    "--buf-size",
    type=SIZE,
    default="1M",
    show_default=True,
    help="Bytes per read and send call.",
)
@peer_options
@transfer_sockopt_option
@output_options
def send_command(
    *,
    file: str | None,
    cid: int | None,
    port: int | None,
    target: str | None,
    sock_type: SocketType,
    size: int | None,
    pattern: str,
    sha256: bool,
    message_size: int | None,
    count: int | None,
    buf_size: int,
    peer: PeerOptions,
    sockopts: SocketOptions,
) -> None:
    """Send FILE (or stdin, or generated data) to a receiver, then wait for it to close.

    With --message-size and --count but no FILE, sends COUNT generated
    messages. Prints what was sent, how long it took and the rate on stderr; --sha256
    adds the digest to compare with 'vsockctl recv --sha256'. A progress bar
    shows on a terminal.

    \b
    Examples:
      vsockctl send --cid 3 --port 5000 disk.img
      tar c dir | vsockctl send --to 3:5000
      vsockctl send --to 1:5000 --size 1G --pattern random --sha256
      vsockctl send --to 1:5000 --type seqpacket --message-size 4K --count 1000
    """
    env = current_env()
    route = peer.route(target, cid, port)
    if size is not None and file is not None:
        raise click.UsageError("give FILE or --size, not both")
    if count is not None and message_size is None:
        raise click.UsageError("--count needs --message-size")
    if given("buf_size") and (message_size is not None or sock_type is not SocketType.STREAM):
        raise click.UsageError("--buf-size is for streams; messages go out whole (--message-size)")
    if buf_size < 1 or (message_size is not None and message_size < 1):
        raise click.UsageError("--buf-size and --message-size must be at least 1 byte")
    if size is None and count is None and given("pattern"):
        raise click.UsageError("--pattern shapes generated data: give --size (or --count)")
    if size is None and count is not None and message_size is not None and file is None:
        size = count * message_size  # --count alone: generated messages, not stdin
    with ExitStack() as stack:
        source: Source
        source = PatternSource(size, pattern) if size is not None else open_source(env, file, stack)
        sock = stack.enter_context(
            open_connection(env, route, sock_type, peer, vsock_factory(env, sockopts))
        )
        stats = TransferStats()
        display = stack.enter_context(TransferDisplay(env, f"to {route.shown}", source.total))
        transfer = Transfer(stats, sha256=sha256, progress=display.update, address=route.shown)

        def stalled(waited: float) -> None:
            if env.json:
                env.emit({"event": "stalled", "waited_ns": int(waited * 1e9),
                          "sent_bytes": stats.sent_bytes, "hint": STALL_HINT})  # fmt: skip
            else:
                env.message(f"vsockctl: no progress for {waited:.0f} s: {STALL_HINT}")

        with reporting(env, stats), StallWatch(lambda: transfer.blocked_since, stalled):
            if message_size is not None or sock_type is not SocketType.STREAM:
                transfer.send_messages(sock, source, message_size or MESSAGE_SEND_CHUNK, count)
            else:
                transfer.send_stream(sock, source, buf_size)
            if sock_type.connected:
                sock.shutdown(socket.SHUT_WR)
                transfer.drain(sock, CLOSE_WAIT if route.half_close_may_be_lost else None)
            stats.finish()
