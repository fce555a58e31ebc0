"""Option bundles and parameter types shared by the commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from vsockctl.address import AddressError, VsockAddress, parse_address, parse_cid, parse_port
from vsockctl.sockets import SocketType

from .env import current_env

F = TypeVar("F", bound=Callable[..., Any])


class AddressParam(click.ParamType[VsockAddress]):
    """``CID:PORT`` (or a bare CID when a default port is given)."""

    name = "CID:PORT"

    def __init__(self, default_port: int | None = None) -> None:
        self.default_port = default_port

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, VsockAddress):
            return value
        try:
            return parse_address(str(value), self.default_port)
        except AddressError as exc:
            self.fail(str(exc), param, ctx)


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
        help="Socket type: stream, seqpacket (message boundaries kept) or dgram (VMCI only).",
    )
