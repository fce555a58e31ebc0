"""Option bundles and parameter types shared by the commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource
from click.shell_completion import CompletionItem

from vsockctl.transfer.engine import DEFAULT_CHUNK
from vsockctl.units import UnitError, format_size, parse_duration, parse_size, whole_number
from vsockctl.vsock.address import AddressError, parse_cid, parse_port
from vsockctl.vsock.sockets import SocketType
from vsockctl.vsock.sockopt_apply import SocketOptions
from vsockctl.vsock.sockopts import OPTIONS, Setting, SockOptError, buffer_settings, parse_setting

from .env import current_env

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class ParsedParam(click.ParamType[T]):
    """A value the core parses from text (a CID, a port, a size, a duration); the parser's
    error becomes click's one-line usage error."""

    def __init__(
        self, name: str, parse: Callable[[str], T], errors: type[ValueError], parsed: type
    ) -> None:
        self.name = name
        self.parse = parse
        self.errors = errors
        self.parsed = parsed  # a value of this type is already parsed (a default, a test)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.parsed) and not isinstance(value, bool):
            return value
        try:
            return self.parse(str(value))
        except self.errors as exc:
            self.fail(str(exc), param, ctx)


CID = ParsedParam("CID", parse_cid, AddressError, int)
PORT = ParsedParam("PORT", parse_port, AddressError, int)
SIZE = ParsedParam("SIZE", parse_size, UnitError, int)
DURATION = ParsedParam("DURATION", parse_duration, UnitError, float)


def given(name: str) -> bool:
    """Whether the running command's parameter ``name`` was written on the command line
    (or in the environment), rather than left at its default."""
    source = click.get_current_context().get_parameter_source(name)
    return source is not None and source is not ParameterSource.DEFAULT


def flag(name: str) -> str:
    """The running command's parameter ``name`` as the user writes it (``--time``)."""
    for param in click.get_current_context().command.params:
        if param.name == name:
            return max(param.opts, key=len)
    return name


class WholeRange(click.IntRange):
    """click's IntRange taking ASCII digits only (its int() also takes '+3', '1_0', '٣')."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            try:
                value = whole_number(value)
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        return super().convert(value, param, ctx)


# A file to read or write: completed as a path, but checked only by opening it, so a
# missing, unreadable or directory FILE is a local-file error (exit 1), not a usage one.
LOCAL_FILE = click.Path(allow_dash=True, readable=False)


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


_OUTPUT_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any], str]] = [  # in --help order
    (("--json", "json"), {"is_flag": True}, "Machine-readable output: JSON objects, one per line."),
    (
        ("-q", "--quiet"),
        {"is_flag": True},
        "Print nothing but data and errors; rely on the exit status.",
    ),
    (
        ("-v", "--verbose"),
        {"count": True},
        "More detail; -v also shows tracebacks of unexpected errors.",
    ),
]


def output_options(func: F) -> F:
    """``--json``, ``-q``, ``-v`` and ``-V``, accepted after the command name as well as
    before it."""
    func = click.version_option(
        None, "-V", "--version", package_name="vsockctl", prog_name="vsockctl"
    )(func)
    for flags, settings, help_text in reversed(_OUTPUT_OPTIONS):
        func = click.option(
            *flags, expose_value=False, callback=_set_output, help=help_text, **settings
        )(func)
    return func


_TYPE_HELP = {
    True: "Socket type: stream, seqpacket (message boundaries kept) or dgram (VMCI only).",
    False: "Socket type: stream, or seqpacket (message boundaries kept).",
}


def _type_option(choices: tuple[SocketType, ...]) -> Callable[[F], F]:
    def convert(ctx: click.Context, param: click.Parameter, value: str) -> SocketType:
        return SocketType(value)

    return click.option(
        "-t",
        "--type",
        "sock_type",
        type=click.Choice([c.value for c in choices], case_sensitive=False),
        default=SocketType.STREAM.value,
        show_default=True,
        callback=convert,
        help=_TYPE_HELP[len(choices) == len(SocketType)],
    )


# ``--type``: any socket type (send, recv), or one with connections (the rest).
socket_type_option = _type_option(tuple(SocketType))
connected_type_option = _type_option((SocketType.STREAM, SocketType.SEQPACKET))


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
        # 'nospace': the shell waits after NAME= for the value (cli/completion.py)
        return [
            CompletionItem(f"{opt.name}=", type="nospace", help=opt.summary)
            for opt in OPTIONS
            if opt.name.startswith(incomplete.lower())
        ]


def complete_option_names(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The socket options' names, for arguments that take NAME."""
    return [
        CompletionItem(opt.name, help=opt.summary)
        for opt in OPTIONS
        if opt.name.startswith(incomplete.lower())
    ]


SOCKOPT = SockOptParam()


def listen_address_options(func: F) -> F:
    """``--port`` (required) and ``--cid`` (any): where ``recv`` listens."""
    port = click.option(
        "--port", type=PORT, required=True, help="Port to listen on ('any': kernel picks)."
    )
    return port(_bind_option(func))


def activatable_address_options(func: F) -> F:
    """``--port`` and ``--cid`` (any) for ``listen``: the port may come from systemd."""
    port = click.option(
        "--port",
        type=PORT,
        help="Port to listen on ('any': kernel picks); required unless systemd passes the socket.",
    )
    return port(_bind_option(func))


def _bind_option(func: F) -> F:
    return click.option(
        "--cid", type=CID, default="any", show_default=True, help="Local CID to bind."
    )(func)


def sockopt_option(func: F) -> F:
    """``--sockopt NAME=VALUE`` (repeatable): options set on each vsock socket before use."""
    return _sockopt_option((), connects=True)(func)


# send, recv, listen and connect move bytes with a 1 MiB vsock buffer unless told
# otherwise: the kernel's 256 KiB default holds back a Python loop by about a
# quarter (benchmarks/vsock_peers.py); throughput has --vsock-buffer-size instead.
TRANSFER_BUFFER_DEFAULTS = buffer_settings(DEFAULT_CHUNK)


def transfer_sockopt_option(func: F) -> F:
    """``--sockopt`` for commands that connect and move bytes, over a 1 MiB vsock buffer."""
    return _sockopt_option(TRANSFER_BUFFER_DEFAULTS, connects=True)(func)


def listener_sockopt_option(func: F) -> F:
    """``--sockopt`` for commands that listen and move bytes, over a 1 MiB vsock buffer."""
    return _sockopt_option(TRANSFER_BUFFER_DEFAULTS, connects=False)(func)


def _sockopt_option(defaults: tuple[Setting, ...], *, connects: bool) -> Callable[[F], F]:
    """The command gets ``sockopts``: a :class:`SocketOptions` of --sockopt over ``defaults``."""

    def options(
        ctx: click.Context, param: click.Parameter, value: tuple[Setting, ...]
    ) -> SocketOptions:
        return SocketOptions(value, defaults)

    default_note = (
        f" Default here: buffer-max-size and buffer-size {format_size(DEFAULT_CHUNK)}."
        if defaults
        else ""
    )
    return click.option(
        "--sockopt",
        "sockopts",
        type=SOCKOPT,
        multiple=True,
        callback=options,
        help="Set a socket option before connecting or listening, for example "
        "buffer-max-size=2M or buffer-size=1M (repeatable; limits are set before the "
        "size). 'vsockctl sockopt list' names them all; -v and --json show the "
        "effective values."
        + (" connect-timeout comes from --timeout." if connects else "")
        + default_note,
    )
