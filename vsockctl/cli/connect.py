"""``vsockctl connect``: netcat's client side for vsock, and ``--probe`` (netcat's -z)."""

from __future__ import annotations

import errno
from contextlib import ExitStack
from dataclasses import replace

import click

from vsockctl.discover.portscan import ProbeResult, probe_with_retry
from vsockctl.errors import Operation, VsockError
from vsockctl.exit_status import ExitStatus, exit_status_for
from vsockctl.transfer.engine import Transfer
from vsockctl.transfer.stats import TransferStats
from vsockctl.vsock.address import AddressError, parse_port_list, parse_probe_target
from vsockctl.vsock.sockets import SocketFactory, SocketType
from vsockctl.vsock.sockopt_apply import SocketOptions

from .app import cli
from .endpoints import open_connection, open_sink, open_source
from .env import Env, current_env
from .format import human_seconds
from .options import (
    CID,
    PORT,
    WholeRange,
    connected_type_option,
    given,
    output_options,
    transfer_sockopt_option,
)
from .peer import PeerOptions, guest_named, peer_options
from .sockopt_view import vsock_factory
from .transfer_ui import reporting


def _probe(
    env: Env,
    peer: PeerOptions,
    *,
    target: str | None,
    cid: int | None,
    port: int | None,
    sock_type: SocketType,
    concurrency: int,
    factory: SocketFactory,
) -> int:
    cids: list[int | None] = [cid]
    try:
        if peer.uds is not None and target is not None:  # PORTS through the VMM
            ports = parse_port_list(target.rpartition(":")[2])
        elif target is not None and (guest := guest_named(target.rpartition(":")[0])):
            ports = parse_port_list(target.rpartition(":")[2])
            # A hybrid socket stands for the CID (Firecracker names both).
            cids = [None] if guest.uds else [guest.cid]
            peer = replace(peer, uds=guest.uds)
        elif target is not None:
            found, ports = parse_probe_target(target)
            cids = list(found)
        elif port is not None and (cid is not None or peer.uds is not None):
            ports = [port]
        else:
            raise click.UsageError("give CID:PORTS, or both --cid and --port")
    except AddressError as exc:
        raise click.BadParameter(str(exc), param_hint="'CID:PORTS'") from exc

    status = ExitStatus.OK
    for one in cids:
        results = probe_with_retry(
            peer.route(None, one, ports[0]),
            ports,
            sock_type=sock_type,
            timeout=peer.timeout,
            concurrency=concurrency,
            retries=peer.retry,
            retry_delay=peer.retry_delay,
            factory=factory,
        )
        for result in results:
            if not result.open and status is ExitStatus.OK:
                err = result.errno if result.errno is not None else 0
                status = (
                    ExitStatus.PROTOCOL_ERROR
                    if err == errno.EPROTO
                    else exit_status_for(VsockError(err, Operation.PROBE, result.address))
                )
            _show_probe(env, result)
        if len(cids) > 1 and one is not None:
            _show_cid(env, one, results)
    return int(status)


def cid_verdict(results: list[ProbeResult]) -> tuple[bool | None, str]:
    """Does the CID exist, judging by how its ports answered? (as vsockscan tells)"""
    errnos = {r.errno for r in results if not r.open}
    if any(r.open for r in results) or errnos & {errno.ECONNRESET, errno.ECONNREFUSED}:
        return True, "exists (it answered)"
    if errnos == {errno.ENODEV}:
        return False, "no such CID (ENODEV: no guest or transport has it)"
    if errno.ETIMEDOUT in errnos:
        return None, "no answer (ETIMEDOUT: a paused VM, or packets dropped)"
    names = ", ".join(sorted({r.errno_name or "?" for r in results}))
    return None, f"unknown ({names})"


def _show_cid(env: Env, cid: int, results: list[ProbeResult]) -> None:
    exists, verdict = cid_verdict(results)
    if env.json:
        env.emit({"event": "probe_cid", "cid": cid, "exists": exists, "verdict": verdict})
    elif not env.quiet:
        env.stdout.write(f"CID {cid}: {verdict}\n".encode())
        env.stdout.flush()


def _show_probe(env: Env, result: ProbeResult) -> None:
    if env.json:
        env.emit(
            {
                "event": "probe",
                "address": result.label,
                "cid": result.cid,
                "port": result.port,
                "open": result.open,
                "elapsed_ns": result.elapsed_ns,
                "errno": result.errno,
                "errno_name": result.errno_name,
                "meaning": result.meaning,
            }
        )
    elif not env.quiet:
        state = "open" if result.open else f"closed  {result.errno_name}: {result.meaning}"
        env.stdout.write(
            f"{result.label}  {state}  ({human_seconds(result.elapsed_ns)})\n".encode()
        )
        env.stdout.flush()


@cli.command("connect", short_help="Talk to CID:PORT (stdin/stdout), or --probe ports.")
@click.argument("target", required=False, metavar="CID:PORT")
@click.option("--cid", type=CID, help="The peer's CID (instead of CID:PORT).")
@click.option("--port", type=PORT, help="The peer's port (instead of CID:PORT).")
@connected_type_option
@click.option(
    "-z",
    "--probe",
    is_flag=True,
    help="Only check whether something accepts; CID:PORTS may list ports and ranges.",
)
@click.option(
    "--concurrency",
    type=WholeRange(1, 256),
    default=16,
    show_default=True,
    help="With --probe: ports tried at once.",
)
@peer_options
@transfer_sockopt_option
@output_options
def connect_command(
    *,
    target: str | None,
    cid: int | None,
    port: int | None,
    sock_type: SocketType,
    probe: bool,
    concurrency: int,
    peer: PeerOptions,
    sockopts: SocketOptions,
) -> None:
    """Connect to CID:PORT and relay stdin to the peer and the peer to stdout.

    When stdin ends, the sending side is shut down (half-close) and the peer's
    data are read until it closes. Data piped in are never dropped; on a
    terminal, the session ends when the peer closes.

    With --probe, only check whether something accepts (netcat's -z): PORTS
    may be a list and ranges, and so may the CIDs (3-64:22 scans for guests,
    as vsockscan does: a reset means the CID exists, ENODEV that it does not,
    a timeout that it did not answer); exit 0 when every port accepts,
    otherwise the status of the first that did not (4 refused, 5 timed out,
    3 no route).
    --retry tries the ports that did not accept again.

    \b
    Examples:
      vsockctl connect 3:5000                      talk to a guest's port 5000
      echo status | vsockctl connect host:1024     one request, print the answer
      vsockctl connect 3:22 --retry 30             wait for a booting guest's sshd
      vsockctl connect --probe 3:22,1024,5000-5010
      vsockctl connect --probe 3:5000 --json | jq .open
      vsockctl connect --probe 3-64:22 --timeout 1s    which CIDs have a guest?
      ssh -o ProxyCommand='vsockctl connect %h:%p' root@vsock/3    (or vsock-mux/PATH)
    """
    env = current_env()
    if given("concurrency") and not probe:
        raise click.UsageError("--concurrency is for --probe")
    if probe:
        raise click.exceptions.Exit(
            _probe(
                env,
                peer,
                target=target,
                cid=cid,
                port=port,
                sock_type=sock_type,
                concurrency=concurrency,
                factory=vsock_factory(env, sockopts.without_defaults()),  # probes move no data
            )
        )
    route = peer.route(target, cid, port)
    with ExitStack() as stack:
        sock = stack.enter_context(
            open_connection(env, route, sock_type, peer, vsock_factory(env, sockopts))
        )
        source = open_source(env, "-", stack)
        sink = open_sink(env, "-", stack)
        stats = TransferStats()
        # a session that ends well is quiet (netcat's way) unless -v or --json asks
        with reporting(env, stats, when_complete=bool(env.verbose or env.json)):
            Transfer(stats, address=route.shown).relay(
                sock,
                source,
                sink,
                source_interactive=env.io.stdin_isatty,
                messages=sock_type is SocketType.SEQPACKET,
                mux=route.uds is not None,
            )
