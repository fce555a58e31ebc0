"""``vsockctl forward``: port forwarding between TCP, Unix sockets, vsock and hybrid vsock.

Sample (stderr)::

    forwarding tcp:127.0.0.1:8080 to vsock:3:80, up to 256 connections at once
    tcp:127.0.0.1:41234: opened to vsock:3:80
    tcp:127.0.0.1:41234: closed after 0.2 s: 78 B from the client, 16.0 MiB to it (done)
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
import time
from contextlib import ExitStack
from typing import Any

import click

from vsockctl.errors import ErrnoMeaning, Operation, VsockError
from vsockctl.events.catalog import Record
from vsockctl.events.forward import (
    ForwardClosed,
    ForwardFailed,
    Forwarding,
    ForwardOpened,
    ForwardRefused,
    ForwardTotals,
)
from vsockctl.forward.flow import Allow, Flow
from vsockctl.forward.server import DEFAULT_MAX_CONNECTIONS, Forwarder, make_room_for
from vsockctl.forward.sides import (
    Side,
    TcpSide,
    UnixSide,
    VsockSide,
    bound_side,
    connect_timeout,
    listen_side,
    parse_side,
)
from vsockctl.vsock.address import AddressError, parse_cid
from vsockctl.vsock.constants import VMADDR_CID_ANY, VMADDR_PORT_ANY
from vsockctl.vsock.sockopt_apply import SocketOptions

from .app import cli
from .env import Env, current_env
from .errors import describe
from .format import human_bytes, human_seconds, plural
from .options import DURATION, WholeRange, output_options, transfer_sockopt_option
from .sockopt_view import vsock_factory


class SideParam(click.ParamType[Side]):
    name = "ADDRESS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Side:
        if isinstance(value, TcpSide | UnixSide | VsockSide):
            return value
        try:
            return parse_side(value)
        except AddressError as exc:
            self.fail(str(exc), param, ctx)


class Report:
    """Each connection's events as one line (stderr) or one --json record."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self._lock = threading.Lock()  # lines from many threads stay whole

    def _out(self, record: Record, line: str, *, error: bool = False) -> None:
        with self._lock:
            if self.env.json:
                self.env.emit(record)
            elif error:  # shown with -q too
                self.env.stderr.write(f"vsockctl: {line}\n")
                self.env.stderr.flush()
            else:
                self.env.message(line)

    @property
    def _silent(self) -> bool:
        """Opened and closed say nothing (-q without --json): no line is built either."""
        return self.env.quiet and not self.env.json

    def opened(self, flow: Flow) -> None:
        if self._silent:
            return
        record = ForwardOpened(event="forward_opened", peer=flow.peer, target=flow.target)
        self._out(record, f"{flow.peer}: opened to {flow.target}")

    def closed(self, flow: Flow) -> None:
        if self._silent:
            return
        error = describe(flow.error) if flow.error is not None else None
        record = ForwardClosed(
            event="forward_closed",
            peer=flow.peer,
            target=flow.target,
            from_client_bytes=flow.upstream.bytes,
            to_client_bytes=flow.downstream.bytes,
            elapsed_ns=flow.elapsed_ns,
            outcome=flow.outcome,
            error=error,
        )
        why = flow.outcome if error is None else f"{flow.outcome}: {error}"
        self._out(
            record,
            f"{flow.peer}: closed after {human_seconds(flow.elapsed_ns)}: "
            f"{human_bytes(flow.upstream.bytes)} from the client, "
            f"{human_bytes(flow.downstream.bytes)} to it ({why})",
        )

    def failed(self, peer: str, target: str, error: BaseException) -> None:
        why = describe(error)
        record = ForwardFailed(event="forward_failed", peer=peer, target=target, error=why)
        self._out(record, f"{peer}: cannot reach {target}: {why}", error=True)

    def refused(self, peer: str, why: str) -> None:
        record = ForwardRefused(event="forward_refused", peer=peer, error=why)
        self._out(record, f"{peer}: refused, {why}", error=True)


def parse_allow(listen: Side, allow: tuple[str, ...]) -> Allow | None:
    """``--allow`` for this listener: CIDs on vsock, addresses or networks on TCP."""
    items = [item.strip() for text in allow for item in text.split(",") if item.strip()]
    if not items:
        return None
    try:
        if isinstance(listen, TcpSide):
            return Allow(networks=tuple(ipaddress.ip_network(i, strict=False) for i in items))
        if isinstance(listen, VsockSide) and listen.route.uds is None:
            return Allow(cids=frozenset(parse_cid(i) for i in items))
    except (ValueError, AddressError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--allow'") from exc
    raise click.BadParameter(
        "a Unix socket's clients have no address to allow; --allow takes CIDs "
        "on a vsock listener, addresses on a TCP one",
        param_hint="'--allow'",
    )


def _in_use_hint(side: Side) -> str:
    if isinstance(side, TcpSide):
        return f"see who holds it with 'ss -ltnp sport = {side.port}'"
    if isinstance(side, UnixSide) or side.route.uds is not None:
        return "see who holds it with 'ss -lxp'"
    return f"see who holds it with 'vsockctl ls --listening --port {side.route.port}'"


@cli.command(name="forward", short_help="Forward connections: TCP, Unix sockets, vsock, hybrid.")
@click.argument("listen_at", metavar="LISTEN", type=SideParam())
@click.argument("target", metavar="TARGET", type=SideParam())
@click.option(
    "--max-connections",
    type=WholeRange(min=1),
    default=DEFAULT_MAX_CONNECTIONS,
    show_default=True,
    help="Relay up to N connections at once; more wait in the listen queue.",
)
@click.option(
    "--allow",
    multiple=True,
    metavar="WHO",
    help="Accept only these clients (repeatable, or comma-separated): peer CIDs on a "
    "vsock listener (3, host), source addresses or networks on a TCP one "
    "(127.0.0.1, 10.0.0.0/8). Others are closed at once and reported.",
)
@click.option(
    "--timeout",
    type=DURATION,
    help="Give up connecting to TARGET after this long (that client is closed). "
    "[default: 5s for a vsock TARGET; a TCP or Unix TARGET gets as long as its kernel "
    "keeps trying, so a busy service loses no client (TCP resends a dropped SYN for "
    "about 2 minutes)]",
)
@transfer_sockopt_option
@output_options
def forward_command(
    *,
    listen_at: Side,
    target: Side,
    max_connections: int,
    allow: tuple[str, ...],
    timeout: float | None,
    sockopts: SocketOptions,
) -> None:
    """Accept connections on LISTEN and relay each one to TARGET, both ways.

    LISTEN and TARGET are each tcp:HOST:PORT (tcp:[::1]:PORT for IPv6),
    unix:PATH, vsock:CID:PORT (or CID:PORT), or uds:PATH:PORT: a guest port
    through a Firecracker / Cloud Hypervisor hybrid vsock socket (as TARGET it
    sends 'CONNECT PORT'; as LISTEN it listens on PATH_PORT, where the VMM
    delivers the guest's connections to CID 2 PORT).

    Each connection is relayed both ways with half-close; one failing closes
    only itself. A line per connection says when it opened and when it closed
    (bytes each way, time, why); -q shows only failures and refusals. Ctrl-C
    or SIGTERM stops accepting, closes the connections, prints the totals,
    removes any socket file it created, and exits 130 or 143.

    \b
    Examples:
      vsockctl forward tcp:127.0.0.1:8080 vsock:3:80      a guest's web server on the host
      vsockctl forward vsock:any:8080 tcp:127.0.0.1:80    a local service, reachable over vsock
      vsockctl forward --allow 3 vsock:any:8000 tcp:10.0.0.5:443   only CID 3 may use it
      vsockctl forward tcp:127.0.0.1:2222 uds:/run/fc.sock:22      ssh into a Firecracker guest
    """
    env = current_env()
    if isinstance(target, TcpSide) and target.port == 0:
        raise click.BadParameter("a target needs a TCP port from 1 to 65535", param_hint="'TARGET'")
    if isinstance(target, VsockSide) and target.route.uds is None:
        address = target.route.address
        if address.cid == VMADDR_CID_ANY or address.port == VMADDR_PORT_ANY:
            raise click.BadParameter(
                f"{target} is not a peer: 'any' is for LISTEN; a target names its CID and port",
                param_hint="'TARGET'",
            )
    allowed = parse_allow(listen_at, allow)
    make_room_for(max_connections)
    report = Report(env)
    factory = vsock_factory(env, sockopts)
    with ExitStack() as stack:
        try:
            listener = stack.enter_context(
                listen_side(listen_at, max(max_connections, socket.SOMAXCONN), factory)
            )
        except VsockError as exc:
            if exc.errno == errno.EADDRINUSE:  # the hint for this family's listeners
                in_use = ErrnoMeaning(
                    "EADDRINUSE", "the address is in use", _in_use_hint(listen_at)
                )
                raise VsockError(
                    exc.errno, Operation.BIND, target=str(listen_at), meaning=in_use
                ) from exc
            raise
        listen_at = bound_side(listen_at, listener)
        forwarder = Forwarder(
            listener,
            listen_at,
            target,
            report,
            max_connections=max_connections,
            allow=allowed,
            timeout=connect_timeout(target, timeout),
            factory=factory,
        )
        _announce(env, listen_at, target, max_connections)
        try:
            forwarder.serve()
        finally:  # Ctrl-C, SIGTERM: connections closed and counted, then the totals
            forwarder.stop()
            _totals(env, forwarder)


def _announce(env: Env, listen_at: Side, target: Side, max_connections: int) -> None:
    if env.json:
        env.emit(
            Forwarding(
                event="forwarding",
                listen=str(listen_at),
                target=str(target),
                max_connections=max_connections,
            )
        )
    else:
        env.message(
            f"forwarding {listen_at} to {target}, "
            f"up to {plural(max_connections, 'connection')} at once"
        )


def _totals(env: Env, forwarder: Forwarder) -> None:
    totals = forwarder.totals
    elapsed = time.monotonic_ns() - totals.started_ns
    if env.json:
        env.emit(
            ForwardTotals(
                event="forward_totals",
                connections=totals.opened,
                failed=totals.failed,
                refused=totals.refused,
                from_client_bytes=totals.upstream.bytes,
                to_client_bytes=totals.downstream.bytes,
                elapsed_ns=elapsed,
            )
        )
        return
    env.message(
        f"forwarded {plural(totals.opened, 'connection')} ({totals.failed} failed, "
        f"{totals.refused} refused) in {human_seconds(elapsed)}: "
        f"{human_bytes(totals.upstream.bytes)} from clients, "
        f"{human_bytes(totals.downstream.bytes)} to them"
    )
