"""Option bundles and parameter types shared by the commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.shell_completion import CompletionItem

from vsockctl.address import AddressError, parse_cid, parse_port
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
