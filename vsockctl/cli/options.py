"""Option bundles and parameter types shared by the commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.shell_completion import CompletionItem

from vsockctl.address import AddressError, VsockAddress, parse_address, parse_cid, parse_port
from vsockctl.constants import VMADDR_FLAG_TO_HOST, VMADDR_PORT_ANY
from vsockctl.route import Route
from vsockctl.sockets import SocketType
from vsockctl.sockopts import OPTIONS, Setting, SockOptError, configured, parse_setting
from vsockctl.transfer import DEFAULT_CHUNK
from vsockctl.units import UnitError, format_size, parse_duration, parse_size

from .env import current_env
from .sockopt_view import report_applied

F = TypeVar("F", bound=Callable[..., Any])


class CidParam(click.ParamType[int]):
    name = "CID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        try:
            return parse_cid(str(value))
        except AddressError as exc:
            self.fail(str(exc), param, ctx)


class PortParam(click.ParamType[int]):
    name = "PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        try:
            return parse_port(str(value))
        except AddressError as exc:
            self.fail(str(exc), param, ctx)


CID = CidParam()
PORT = PortParam()


def _set_output(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if ctx.resilient_parsing:
        return
    env = current_env()
    if param.name == "json" and value:
        env.json = True
    elif param.name == "quiet" and value:
        env.quiet = True
    elif param.name == "verbose" and value:
        env.verbose += int(value)


def output_options(func: F) -> F:
    """``--json``, ``-q`` and ``-v``, accepted after the command name as well as before it."""
    func = click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_set_output,
        help="More detail; -v also shows tracebacks of unexpected errors.",
    )(func)
    func = click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=_set_output,
        help="Print nothing but data and errors; rely on the exit status.",
    )(func)
    func = click.option(
        "--json",
        "json",
        is_flag=True,
        expose_value=False,
        callback=_set_output,
        help="Machine-readable output: JSON objects, one per line.",
    )(func)
    return func


_TYPE_HELP = {
    True: "Socket type: stream, seqpacket (message boundaries kept) or dgram (VMCI only).",
    False: "Socket type: stream, or seqpacket (message boundaries kept).",
}


def socket_type_option(
    default: SocketType = SocketType.STREAM, choices: tuple[SocketType, ...] = tuple(SocketType)
) -> Callable[[F], F]:
    def convert(ctx: click.Context, param: click.Parameter, value: str) -> SocketType:
        return SocketType(value)

    return click.option(
        "-t",
        "--type",
        "sock_type",
        type=click.Choice([c.value for c in choices], case_sensitive=False),
        default=default.value,
        show_default=True,
        callback=convert,
        help=_TYPE_HELP[len(choices) == len(SocketType)],
    )


class SizeParam(click.ParamType[int]):
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except UnitError as exc:
            self.fail(str(exc), param, ctx)


class DurationParam(click.ParamType[float]):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except UnitError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeParam()
DURATION = DurationParam()


def connect_options(func: F) -> F:
    """``--timeout``, ``--retry`` and ``--retry-delay`` for commands that connect."""
    func = click.option(
        "--retry-delay",
        type=DURATION,
        default="1s",
        show_default=True,
        help="Pause between attempts with --retry.",
    )(func)
    func = click.option(
        "--retry",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        metavar="N",
        help="Try N more times while nothing listens yet (a guest still booting).",
    )(func)
    func = click.option(
        "--timeout",
        type=DURATION,
        default="5s",
        show_default=True,
        help="Give up connecting after this long (sets the vsock connect timeout too).",
    )(func)
    return func


def resolve_route(
    target: str | None, cid: int | None, port: int | None, uds: str | None, to_host: bool
) -> Route:
    """The peer from ``CID:PORT`` or from ``--cid``/``--port`` (not both), and
    ``--uds``/``--to-host``: the one value the command hands on.

    With ``--uds`` only the guest's port counts (``PORT``, or ``--port``); with
    ``--to-host`` the address carries ``VMADDR_FLAG_TO_HOST``.
    """
    if uds is not None and to_host:
        raise click.UsageError("--to-host is for vsock addresses; --uds goes through a VMM")
    if uds is not None:
        if cid is not None:
            raise click.UsageError("--uds takes the place of the CID; give only the port")
        if target is not None:
            if port is not None:
                raise click.UsageError("give PORT or --port, not both")
            try:
                port = parse_port(target.rpartition(":")[2])
            except AddressError as exc:
                raise click.BadParameter(str(exc), param_hint="'PORT'") from exc
        if port is None:
            raise click.UsageError("with --uds, give the guest's port (PORT or --port)")
        return Route.hybrid(uds, port)
    address = _resolve_vsock(target, cid, port)
    if to_host:
        address = VsockAddress(address.cid, address.port, VMADDR_FLAG_TO_HOST)
    return Route(address)


def _resolve_vsock(target: str | None, cid: int | None, port: int | None) -> VsockAddress:
    if target is not None:
        if cid is not None or port is not None:
            raise click.UsageError("give CID:PORT or --cid/--port, not both")
        try:
            return parse_address(target)
        except AddressError as exc:
            raise click.BadParameter(str(exc), param_hint="'CID:PORT'") from exc
    if cid is None or port is None:
        raise click.UsageError("give CID:PORT, or both --cid and --port")
    return VsockAddress(cid, port)


def listen_route(cid: int, port: int, uds: str | None, sock_type: SocketType) -> Route:
    """Where a listening command waits: CID:PORT, or with ``--uds`` the socket PATH_PORT."""
    if uds is None:
        return Route(VsockAddress(cid, port))
    if sock_type is not SocketType.STREAM:
        raise click.UsageError("hybrid vsock (--uds) carries streams only")
    if port == VMADDR_PORT_ANY:
        raise click.UsageError("with --uds, give a port number (the guest connects to CID 2 PORT)")
    return Route.hybrid(uds, port)


class SockOptParam(click.ParamType[Setting]):
    """``NAME=VALUE`` for a socket option; completes the option names."""

    name = "NAME=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Setting):
            return value
        try:
            return parse_setting(str(value))
        except SockOptError as exc:
            self.fail(str(exc), param, ctx)

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        return [
            CompletionItem(f"{opt.name}=", help=opt.summary)
            for opt in OPTIONS
            if opt.name.startswith(incomplete.lower())
        ]


SOCKOPT = SockOptParam()


def peer_options(func: F) -> F:
    """``--uds PATH`` (hybrid vsock) and ``--to-host``, for :func:`resolve_route`."""
    func = click.option(
        "--to-host",
        is_flag=True,
        help="Set VMADDR_FLAG_TO_HOST: route to the host even where a host-side transport "
        "is loaded (nested VMs; Linux 5.10+).",
    )(func)
    return _uds_option(
        "Hybrid vsock (Firecracker, Cloud Hypervisor): connect through the VMM's Unix "
        "socket PATH ('CONNECT PORT') instead of a CID; give only the guest's port."
    )(func)


def uds_listen_option(func: F) -> F:
    """``--uds PATH`` for commands that listen: a guest's CID 2 port P arrives on PATH_P."""

    return _uds_option(
        "Hybrid vsock (Firecracker, Cloud Hypervisor): listen on the Unix socket "
        "PATH_PORT, where the VMM delivers a guest's connections to CID 2 PORT. "
        "The socket file is removed at exit."
    )(func)


def _uds_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--uds",
        metavar="PATH",
        type=click.Path(dir_okay=False),
        help=help_text,
    )


def sockopt_option(func: F) -> F:
    """``--sockopt NAME=VALUE`` (repeatable): options set on each vsock socket before use."""
    return _sockopt_option(())(func)


# send, recv, listen and connect move bytes with a 1 MiB vsock buffer unless told
# otherwise: the kernel's 256 KiB default holds back a Python loop by about a
# quarter (benchmarks/vsock_peers.py); throughput has --vsock-buffer-size instead.
TRANSFER_BUFFER_DEFAULTS = (
    parse_setting(f"buffer-max-size={format_size(DEFAULT_CHUNK)}"),
    parse_setting(f"buffer-size={format_size(DEFAULT_CHUNK)}"),
)


def transfer_sockopt_option(func: F) -> F:
    """``--sockopt`` for commands that move bytes, over a default 1 MiB vsock buffer."""
    return _sockopt_option(TRANSFER_BUFFER_DEFAULTS)(func)


def _sockopt_option(defaults: tuple[Setting, ...]) -> Callable[[F], F]:
    def install(ctx: click.Context, param: click.Parameter, value: tuple[Setting, ...]) -> None:
        if ctx.resilient_parsing or not (value or defaults):
            return
        env = current_env()
        env.socket_factory = configured(
            env.socket_factory, value, lambda applied: report_applied(env, applied), defaults
        )

    default_note = (
        f" Default here: buffer-max-size and buffer-size {format_size(DEFAULT_CHUNK)}."
        if defaults
        else ""
    )
    return click.option(
        "--sockopt",
        type=SOCKOPT,
        multiple=True,
        expose_value=False,
        callback=install,
        help="Set a socket option before connecting or listening, for example "
        "buffer-max-size=2M or buffer-size=1M (repeatable; limits are set before the "
        "size). 'vsockctl sockopt list' names them all; -v and --json show the "
        f"effective values. connect-timeout comes from --timeout.{default_note}",
    )
