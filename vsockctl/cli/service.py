"""Running as a service: the socket systemd passed, what we tell systemd, /metrics.

A listening command (forward, listen -k, throughput server) asks
:func:`inherited` for the socket of a ``.socket`` unit before it opens one of
its own, wraps its serving in :func:`notifying` (READY=1 once listening,
STATUS= while serving, STOPPING=1 when it stops, the watchdog's pings), and
with ``--metrics`` serves Prometheus metrics (:func:`metrics_server`).
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vsockctl.events.service import MetricsServed
from vsockctl.systemd.activation import ActivationError, choose, listen_fds
from vsockctl.systemd.notify import Notifier
from vsockctl.vsock.constants import AF_VSOCK, VMADDR_CID_ANY, VMADDR_PORT_ANY

from .env import Env

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from vsockctl.metrics.serve import MetricsAddress

F = TypeVar("F", bound=Callable[..., Any])

ACTIVATION_HELP = """\
Under systemd socket activation (a .socket unit: ListenStream=vsock::5000,
ListenStream=127.0.0.1:8080, ListenStream=/run/x.sock) the listening socket is
the one systemd passes (LISTEN_FDS); an address given must then match it. Under
NOTIFY_SOCKET (Type=notify) it sends READY=1 once listening, STATUS= with its
counts, STOPPING=1 when it stops, and WATCHDOG=1 as WatchdogSec= asks."""


def with_activation_help(command: click.Command) -> click.Command:
    """Put :data:`ACTIVATION_HELP` where the command's help says ``{activation}``."""
    command.help = (command.help or "").replace("{activation}", ACTIVATION_HELP)
    return command


def inherited(wanted: str, sock_type: int = socket.SOCK_STREAM) -> socket.socket | None:
    """The listening socket systemd passed for ``wanted`` (None when not activated)."""
    try:
        passed = listen_fds()
        return choose(passed, wanted, sock_type).sock if passed else None
    except ActivationError as exc:
        raise click.UsageError(str(exc)) from exc


def vsock_port_matches(sock: socket.socket, cid: int | None, port: int | None) -> None:
    """A command given --cid/--port under activation: the passed socket must be there."""
    if sock.family != AF_VSOCK:
        where = sock.getsockname()
        raise click.UsageError(f"systemd passed a non-vsock socket ({where!r}); this takes vsock")
    bound_cid, bound_port = sock.getsockname()
    if port not in (None, VMADDR_PORT_ANY, bound_port) or cid not in (
        None,
        VMADDR_CID_ANY,
        bound_cid,
    ):
        raise mismatch(f"{cid if cid is not None else 'any'}:{port}", f"{bound_cid}:{bound_port}")


def mismatch(asked: str, passed: str) -> click.UsageError:
    return click.UsageError(
        f"systemd passed a socket on {passed}, and the command line asks for {asked}: "
        "give the address of the .socket unit, or none"
    )


@contextmanager
def notifying(env: Env) -> Iterator[Notifier]:
    """sd_notify for the command's life: it calls ``ready()`` once listening;
    STOPPING=1 goes out however it ends (SIGTERM, Ctrl-C, an error)."""
    notifier = Notifier()
    try:
        yield notifier
    finally:
        notifier.stopping()
        if env.verbose and notifier.sent:
            env.message("told systemd: " + " | ".join(s.replace("\n", ", ") for s in notifier.sent))


def metrics_option(func: F) -> F:
    """``--metrics tcp:HOST:PORT``: serve Prometheus metrics there."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        from vsockctl.metrics.serve import MetricsAddressError, parse_metrics_address

        try:
            return parse_metrics_address(value)
        except MetricsAddressError as exc:
            raise click.BadParameter(str(exc)) from exc

    return click.option(
        "--metrics",
        metavar="tcp:HOST:PORT",
        callback=parse,
        help="Serve Prometheus metrics on http://HOST:PORT/metrics (port 0: a free one).",
    )(func)


def metrics_server(
    env: Env, address: MetricsAddress, fill: Callable[[CollectorRegistry], None]
) -> Callable[[], None]:
    """Serve a registry that ``fill`` populates on ``address``; the function that
    stops the server."""
    from prometheus_client import CollectorRegistry

    from vsockctl.metrics.serve import serve

    registry = CollectorRegistry()
    fill(registry)
    try:
        server, where = serve(registry, address)
    except OSError as exc:
        raise click.BadParameter(
            f"cannot serve metrics on {address}: {exc.strerror or exc}", param_hint="'--metrics'"
        ) from exc
    host = f"[{where.host}]" if ":" in where.host else where.host
    url = f"http://{host}:{where.port}/metrics"
    if env.json:
        env.emit(MetricsServed(event="metrics", url=url))
    else:
        env.message(f"metrics on {url}")
    return functools.partial(_shutdown, server)


def _shutdown(server: Any) -> None:
    server.shutdown()
    server.server_close()
