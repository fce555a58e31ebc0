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
from typing import TYPE_CHECKING, Any

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
from vsockctl.forward.flow import Allow, Flow, Refusal
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
    same_side,
    side_of,
)
from vsockctl.vsock.address import AddressError, parse_cid
from vsockctl.vsock.constants import VMADDR_CID_ANY, VMADDR_PORT_ANY
from vsockctl.vsock.sockopt_apply import SocketOptions

from .app import cli
from .env import Env, current_env
from .errors import describe
from .format import human_bytes, human_seconds, plural
from .options import DURATION, WholeRange, output_options, transfer_sockopt_option
from .service import (
    inherited,
    metrics_option,
    metrics_server,
    mismatch,
    notifying,
    with_activation_help,
)
from .sockopt_view import vsock_factory

if TYPE_CHECKING:
    from vsockctl.metrics.forward import ForwardMetrics
    from vsockctl.metrics.serve import MetricsAddress


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

    def __init__(self, env: Env, metrics: ForwardMetrics | None = None) -> None:
        self.env = env
        self.metrics = metrics
        self._lock = threading.Lock()  # lines from many threads stay whole
        self.counts = {"open": 0, "forwarded": 0, "failed": 0, "refused": 0}

    def _count(self, key: str, step: int = 1) -> None:
        with self._lock:
            self.counts[key] += step

    def status(self) -> str:
        """The counts, for systemd's STATUS=."""
        c = self.counts
        return (
            f"{c['open']} open, {c['forwarded']} forwarded, {c['failed']} failed, "
            f"{c['refused']} refused"
        )

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
        self._count("open")
        self._count("forwarded")
        if self.metrics is not None:
            self.metrics.opened(flow)
        if self._silent:
            return
        record = ForwardOpened(event="forward_opened", peer=flow.peer, target=flow.target)
        self._out(record, f"{flow.peer}: opened to {flow.target}")

    def closed(self, flow: Flow) -> None:
        self._count("open", -1)
        if self.metrics is not None:
            self.metrics.closed(flow)
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
        self._count("failed")
        if self.metrics is not None:
            self.metrics.failed_to(error)
        why = describe(error)
        record = ForwardFailed(event="forward_failed", peer=peer, target=target, error=why)
        self._out(record, f"{peer}: cannot reach {target}: {why}", error=True)

    def refused(self, peer: str, reason: Refusal, why: str) -> None:
        self._count("refused")
        if self.metrics is not None:
            self.metrics.refused_for(reason)
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


@with_activation_help
@cli.command(name="forward", short_help="Forward connections: TCP, Unix sockets, vsock, hybrid.")
@click.argument("sides", metavar="[LISTEN] TARGET", nargs=-1, type=SideParam())
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
@metrics_option
@transfer_sockopt_option
@output_options
def forward_command(
    *,
    sides: tuple[Side, ...],
    max_connections: int,
    allow: tuple[str, ...],
    timeout: float | None,
    metrics: MetricsAddress | None,
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

    {activation}

    With --metrics, /metrics has vsockctl_forward_connections_total,
    _connections_open, _connections_failed_total and _connections_refused_total
    (by reason), vsockctl_forward_bytes_total (by direction, open connections
    included), _connection_duration_seconds (a histogram) and
    vsockctl_build_info.

    \b
    Examples:
      vsockctl forward tcp:127.0.0.1:8080 vsock:3:80      a guest's web server on the host
      vsockctl forward vsock:any:8080 tcp:127.0.0.1:80    a local service, reachable over vsock
      vsockctl forward --allow 3 vsock:any:8000 tcp:10.0.0.5:443   only CID 3 may use it
      vsockctl forward tcp:127.0.0.1:2222 uds:/run/fc.sock:22      ssh into a Firecracker guest
      vsockctl forward --metrics tcp:127.0.0.1:9101 vsock:any:8080 tcp:127.0.0.1:80
      vsockctl forward tcp:127.0.0.1:80       under a .socket unit that listens
    """
    env = current_env()
    passed = inherited("forward")
    if len(sides) not in (1, 2) or (len(sides) == 1 and passed is None):
        raise click.UsageError(
            "give LISTEN and TARGET (LISTEN may be left out when systemd passes the socket)"
        )
    listen_at: Side | None = sides[0] if len(sides) == 2 else None
    target = sides[-1]
    if isinstance(target, TcpSide) and target.port == 0:
        raise click.BadParameter("a target needs a TCP port from 1 to 65535", param_hint="'TARGET'")
    if isinstance(target, VsockSide) and target.route.uds is None:
        address = target.route.address
        if address.cid == VMADDR_CID_ANY or address.port == VMADDR_PORT_ANY:
            raise click.BadParameter(
                f"{target} is not a peer: 'any' is for LISTEN; a target names its CID and port",
                param_hint="'TARGET'",
            )
    if passed is not None:
        inherited_side = side_of(passed)
        if listen_at is not None and not same_side(listen_at, inherited_side):
            raise mismatch(str(listen_at), str(inherited_side))
        listen_at = inherited_side
    assert listen_at is not None
    allowed = parse_allow(listen_at, allow)
    make_room_for(max_connections)
    factory = vsock_factory(env, sockopts)
    with ExitStack() as stack:
        forward_metrics: list[ForwardMetrics] = []
        if metrics is not None:
            stack.callback(
                metrics_server(env, metrics, lambda r: forward_metrics.append(_metrics(r)))
            )
        report = Report(env, forward_metrics[0] if forward_metrics else None)
        if passed is not None:
            listener = stack.enter_context(passed)
        else:
            backlog = max(max_connections, socket.SOMAXCONN)
            try:
                listener = stack.enter_context(listen_side(listen_at, backlog, factory))
            except VsockError as exc:
                raise _in_use(exc, listen_at) from exc
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
        with notifying(env) as notifier:
            notifier.ready(report.status)
            try:
                forwarder.serve()
            finally:  # Ctrl-C, SIGTERM: connections closed and counted, then the totals
                forwarder.stop()
                _totals(env, forwarder)


def _metrics(registry: Any) -> ForwardMetrics:
    from vsockctl.metrics.forward import ForwardMetrics

    return ForwardMetrics(registry)


def _in_use(exc: VsockError, listen_at: Side) -> VsockError:
    """EADDRINUSE with the hint for this family's listeners; other errors as they are."""
    if exc.errno != errno.EADDRINUSE:
        return exc
    in_use = ErrnoMeaning("EADDRINUSE", "the address is in use", _in_use_hint(listen_at))
    return VsockError(exc.errno, Operation.BIND, target=str(listen_at), meaning=in_use)


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
