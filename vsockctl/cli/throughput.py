"""``vsockctl throughput`` (also ``bench``): iperf for vsock, between two vsockctl ends."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vsockctl.bench.client import ClientError, run_client
from vsockctl.bench.protocol import DEFAULT_PORT
from vsockctl.bench.server import ThroughputServer
from vsockctl.bench.spec import MAX_BUF, MAX_SECONDS, BadTestParameters, TestSpec
from vsockctl.errors import VsockUnavailableError
from vsockctl.events.throughput import Interval, ServerRecord, TestDirection, TestMode
from vsockctl.units import UnitError, format_size, parse_size
from vsockctl.vsock.address import AddressError, VsockAddress, parse_address, parse_port
from vsockctl.vsock.constants import VMADDR_CID_ANY, VMADDR_CID_LOCAL
from vsockctl.vsock.route import Route
from vsockctl.vsock.sockets import SocketFactory, SocketType, local_address
from vsockctl.vsock.sockopt_apply import SocketOptions

from .app import cli
from .endpoints import announce_listening, open_listener
from .env import Env, current_env
from .options import (
    DURATION,
    PORT,
    SIZE,
    WholeRange,
    connected_type_option,
    flag,
    given,
    output_options,
    sockopt_option,
)
from .peer import PeerOptions, guest_named, listen_route, peer_options
from .service import (
    inherited,
    metrics_option,
    metrics_server,
    notifying,
    vsock_port_matches,
    with_activation_help,
)
from .sockopt_view import vsock_factory
from .throughput_report import LiveDisplay, show_interval, show_server_event, show_summary

if TYPE_CHECKING:
    from vsockctl.metrics.serve import MetricsAddress


class BufferSizeParam(click.ParamType[int | None]):
    name = "SIZE|default"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, int):
            return value
        if str(value).strip().lower() == "default":
            return None
        try:
            return parse_size(str(value))
        except UnitError as exc:
            self.fail(f"{exc}, or 'default' to leave the kernel's", param, ctx)


@with_activation_help
@click.command(short_help="Measure throughput and latency between two vsockctl ends (iperf).")
@click.argument("role", required=False, type=click.Choice(["server", "client"]))
@click.argument("target", required=False, metavar="[CID[:PORT]]")
@click.option(
    "--port",
    type=PORT,
    help=f"Server: port to listen on [default: {DEFAULT_PORT}]. "
    "Client: the server's port when CID has none.",
)
@click.option("--loopback", is_flag=True, help="Run a server and a client here over CID 1.")
@click.option("--once", is_flag=True, help="Server: serve one test, then exit.")
@click.option("--time", "seconds", type=DURATION, help="Test for this long [default: 10s].")
@click.option("-n", "--bytes", "nbytes", type=SIZE, help="Test this many bytes instead of a time.")
@click.option(
    "-l",
    "--buf-size",
    type=SIZE,
    default="1M",
    show_default=True,
    help="Bytes per send/recv call (per message with --type seqpacket).",
)
@click.option(
    "--vsock-buffer-size",
    type=BufferSizeParam(),
    default="1M",
    show_default=True,
    help="vsock buffer on both ends (buffer-max-size, then buffer-size); "
    "'default' leaves the kernel's 256K.",
)
@click.option(
    "-P",
    "--parallel",
    type=WholeRange(1, 128),
    default=1,
    show_default=True,
    help="Streams at once.",
)
@click.option("-R", "--reverse", is_flag=True, help="The server sends, the client receives.")
@click.option("--bidir", is_flag=True, help="Both ends send and receive at once.")
@click.option(
    "-i",
    "--interval",
    type=DURATION,
    default="1s",
    show_default=True,
    help="Seconds between interval reports (0: none).",
)
@connected_type_option
@click.option("--zerocopy", is_flag=True, help="Send with MSG_ZEROCOPY (Linux 6.7+ on vsock).")
@click.option("--rcvlowat", type=SIZE, help="SO_RCVLOWAT on the receiving sockets.")
@click.option(
    "--latency",
    is_flag=True,
    help="Ping-pong --msg-size bytes: round trips per second and percentiles.",
)
@click.option(
    "--msg-size", type=SIZE, default="1", show_default=True, help="Message size with --latency."
)
@peer_options
@metrics_option
@sockopt_option
@output_options
def throughput_command(
    *,
    role: str | None,
    target: str | None,
    port: int | None,
    loopback: bool,
    once: bool,
    metrics: MetricsAddress | None,
    peer: PeerOptions,
    sockopts: SocketOptions,
    **test_options: Any,
) -> None:
    """Measure vsock throughput (or latency) between a server and a client.

    Start 'throughput server' on one end and 'throughput client CID' on the
    other; 'bench' is the same command. 'bench --loopback' runs both here over
    CID 1 (needs the vsock_loopback module). The headline is the receiver's
    goodput; the sender's figures, CPU use of both ends and the effective
    buffer sizes come with it. The server serves one client after another.

    The two ends agree on the test over a small versioned control exchange
    (see 'man vsockctl-throughput'); use the same vsockctl version on both.

    The server as a service: {activation} With --metrics, /metrics has
    vsockctl_throughput_tests_total (by outcome), _clients_refused_total,
    _bytes_total (by direction), _test_running and vsockctl_build_info.

    \b
    Examples:
      vsockctl throughput server                    in the guest (port 5201)
      vsockctl throughput client 3                  on the host: 10 s to the guest
      vsockctl throughput client 3 -R -P 4 --time 5s    guest to host, 4 streams
      vsockctl bench --loopback --bytes 1G
      vsockctl bench --loopback --latency --msg-size 64
      vsockctl bench --loopback --json | jq 'select(.event=="summary")'
    """
    env = current_env()
    factory = vsock_factory(env, sockopts)
    if loopback:
        if role is not None or target is not None or peer.uds is not None or port is not None:
            raise click.UsageError(
                "--loopback runs both ends itself; give no role, CID, --port or --uds"
            )
        _run_loopback(env, _spec(**test_options), peer, factory)
        return
    if role == "server":
        if target is not None:
            raise click.UsageError("the server takes no CID; use --port")
        chosen = [name for name in test_options if given(name)]
        if chosen:
            raise click.UsageError(
                f"the client chooses the test; {flag(chosen[0])} goes on "
                "'throughput client' (the server follows what it asks)"
            )
        passed = inherited("throughput server")
        if passed is not None:
            if peer.uds is not None:
                raise click.UsageError("systemd passes the socket: drop --uds")
            vsock_port_matches(passed, None, port)
            port = local_address(passed).port
        port = DEFAULT_PORT if port is None else port
        route = listen_route(VMADDR_CID_ANY, port, peer.uds, SocketType.STREAM)
        _run_server(env, route, once, factory, metrics, passed)
        return
    if metrics is not None:
        raise click.UsageError("--metrics is for the server")
    if role != "client" or (target is None and peer.uds is None):
        raise click.UsageError("give 'server', 'client CID[:PORT]' or --loopback")
    if once:
        raise click.UsageError("--once is for the server")
    _run_client(env, _client_route(target, port, peer), _spec(**test_options), peer, factory)


def _client_route(target: str | None, port: int | None, peer: PeerOptions) -> Route:
    """CID[:PORT] (the port defaults to the server's), or with --uds only the port."""
    if peer.uds is not None:  # only the port: the VMM's socket stands for the CID
        if target is not None:
            raise click.UsageError(
                f"with --uds the VMM's socket stands for the CID: drop {target!r}, "
                "give the server's port with --port"
            )
        return peer.route(None, None, DEFAULT_PORT if port is None else port)
    name, colon, port_text = (target or "").partition(":")
    try:
        if (guest := guest_named(name)) is not None:  # a VM's name, found once
            server_port = parse_port(port_text) if colon else DEFAULT_PORT if port is None else port
            return peer.to_guest(guest, server_port)
        address = parse_address(target or "", default_port=DEFAULT_PORT if port is None else port)
    except AddressError as exc:
        raise click.BadParameter(str(exc), param_hint="'CID[:PORT]'") from exc
    return peer.route(None, address.cid, address.port)


def _spec(
    *,  # the options that make the test: the rest of the command's parameters
    seconds: float | None,
    nbytes: int | None,
    buf_size: int,
    vsock_buffer_size: int | None,
    parallel: int,
    reverse: bool,
    bidir: bool,
    interval: float,
    sock_type: SocketType,
    zerocopy: bool,
    rcvlowat: int | None,
    latency: bool,
    msg_size: int,
) -> TestSpec:
    if seconds is not None and nbytes is not None:
        raise click.UsageError("give --time or --bytes, not both")
    if reverse and bidir:
        raise click.UsageError("give --reverse or --bidir, not both")
    if latency and (parallel != 1 or reverse or bidir):
        raise click.UsageError("--latency runs one stream there and back; drop -P/-R/--bidir")
    if nbytes is not None and nbytes < parallel:
        raise click.UsageError("--bytes must be at least one byte per stream")
    if seconds is not None and not 0 < seconds <= MAX_SECONDS:
        raise click.UsageError(f"--time must be more than 0 and at most {MAX_SECONDS:.0f}s")
    for option, size in (("--buf-size", buf_size), ("--msg-size", msg_size)):
        if not 1 <= size <= MAX_BUF:
            raise click.UsageError(f"{option} must be from 1 byte to {format_size(MAX_BUF)}")
    direction = (
        TestDirection.REVERSE if reverse else TestDirection.BIDIR if bidir else TestDirection.SEND
    )
    spec = TestSpec(
        mode=TestMode.LATENCY if latency else TestMode.THROUGHPUT,
        direction=direction,
        seconds=None if nbytes is not None else (seconds if seconds is not None else 10.0),
        nbytes=nbytes,
        buf_size=buf_size,
        parallel=parallel,
        sock_type=sock_type.value,
        vsock_buffer_size=vsock_buffer_size,
        rcvlowat=rcvlowat,
        zerocopy=zerocopy,
        msg_size=msg_size,
        interval=interval,
    )
    try:
        spec.check()
    except BadTestParameters as exc:
        raise click.UsageError(exc.problem) from exc
    return spec


def _run_server(
    env: Env,
    route: Route,
    once: bool,
    factory: SocketFactory,
    metrics: MetricsAddress | None,
    passed: socket.socket | None,
) -> None:
    counts = {"done": 0, "failed": 0, "refused": 0}
    observers: list[Callable[[ServerRecord], None]] = []

    def on_event(record: ServerRecord) -> None:
        outcome = {"test_done": "done", "test_failed": "failed", "refused": "refused"}
        if record["event"] in outcome:
            counts[outcome[record["event"]]] += 1
        for observe in observers:
            observe(record)
        show_server_event(env, record)

    with ExitStack() as stack:
        if metrics is not None:
            stack.callback(metrics_server(env, metrics, lambda r: observers.append(_observe(r))))
        if passed is not None:
            sock = stack.enter_context(passed)
        else:
            sock = open_listener(stack, route, SocketType.STREAM, factory)
        server = ThroughputServer(sock, route, factory, on_event)
        announce_listening(env, sock, "one test after another" if not once else "one test")
        with notifying(env) as notifier:
            notifier.ready(
                lambda: "{done} tests done, {failed} failed, {refused} refused".format(**counts)
            )
            server.serve(1 if once else None)


def _observe(registry: Any) -> Callable[[ServerRecord], None]:
    from vsockctl.metrics.throughput import ThroughputMetrics

    return ThroughputMetrics(registry).record


def _run_client(
    env: Env, route: Route, spec: TestSpec, peer: PeerOptions, factory: SocketFactory
) -> None:
    def on_interval(record: Interval) -> None:
        show_interval(env, record)
        live.interval(record)

    try:
        with LiveDisplay(env, spec.seconds, spec.nbytes) as live:
            summary = run_client(
                route,
                spec,
                factory=factory,
                timeout=peer.timeout,
                retries=peer.retry,
                retry_delay=peer.retry_delay,
                on_interval=on_interval,
                on_event=lambda record: env.emit(record) if env.json else None,
            )
    except ClientError as exc:
        if exc.partial is not None:
            show_summary(env, exc.partial)
        raise exc.cause from None
    show_summary(env, summary)


def _run_loopback(env: Env, spec: TestSpec, peer: PeerOptions, factory: SocketFactory) -> None:
    if not Path("/sys/module/vsock_loopback").is_dir():
        raise VsockUnavailableError(
            "no vsock loopback transport here, so CID 1 carries nothing",
            "'modprobe vsock_loopback' (Linux 5.6+), or run 'throughput server' and "
            "'throughput client' on the two ends of a VM",
        )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vsockctl",
            "--json",
            "throughput",
            "server",
            "--port",
            "any",
            "--once",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        try:
            port = int(json.loads(first)["port"])
        except (ValueError, KeyError, TypeError):
            _, err = server.communicate(timeout=10)
            raise VsockUnavailableError(
                f"the loopback server did not start: {err.decode(errors='replace').strip()}"
            ) from None
        route = Route(VsockAddress(VMADDR_CID_LOCAL, port))
        _run_client(env, route, spec, peer, factory)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for pipe in (server.stdout, server.stderr):
            if pipe is not None:
                pipe.close()


cli.add_command(throughput_command, "throughput")
cli.add_command(throughput_command, "bench")
