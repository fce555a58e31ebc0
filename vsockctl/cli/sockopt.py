"""``vsockctl sockopt``: list, read and set vsock socket options with their real C widths."""

from __future__ import annotations

import socket

import click

from vsockctl.errors import VsockError
from vsockctl.events.system import SockoptOption, SockoptValue
from vsockctl.exit_status import ExitStatus
from vsockctl.vsock.sockets import SocketType, open_socket
from vsockctl.vsock.sockopt_apply import apply, get_option
from vsockctl.vsock.sockopts import (
    OPTIONS,
    Setting,
    SockOpt,
    SockOptError,
    Value,
    format_value,
    json_value,
    lookup,
)

from .app import cli
from .env import Env, current_env
from .format import escape
from .options import SOCKOPT, complete_option_names, connected_type_option, output_options
from .sockopt_view import applied_record, applied_table
from .table import Column, Table


@cli.group("sockopt", short_help="List, read and set vsock socket options (with their C widths).")
@output_options
def sockopt_group() -> None:
    """List, read and set the socket options people tune on vsock.

    Each option is read and written with its real C width (u64 for the vsock
    buffer sizes, struct timeval for timeouts, int for the SOL_SOCKET ones),
    on a fresh socket of --type. Names are case-insensitive and may be the
    Linux name (SO_VM_SOCKETS_BUFFER_SIZE), the VMware one
    (SO_VMCI_BUFFER_SIZE, vmci-buffer-size) or the short form (buffer-size).
    Sizes take suffixes (64K, 1M), timeouts units (500ms, 2s).

    \b
    Examples:
      vsockctl sockopt list
      vsockctl sockopt get buffer-size connect-timeout
      vsockctl sockopt set buffer-max-size=2M buffer-size=1M
      vsockctl send --to 3:5000 --sockopt buffer-max-size=1M --sockopt buffer-size=1M -v
    """


def _probe_option(sock: socket.socket, opt: SockOpt) -> tuple[str | None, Value | None]:
    """Reading ``opt``: (None, its value), or (the errno's name, None) when refused."""
    try:
        return None, get_option(sock, opt)
    except VsockError as exc:
        return exc.meaning.name, None


@sockopt_group.command(
    "list", short_help="Every option vsockctl knows, and whether this kernel has it."
)
@connected_type_option
@output_options
def list_command(sock_type: SocketType) -> None:
    """Every option vsockctl knows: level, number, C type, default, Linux and VMware
    names, and whether this kernel handles it (read on a fresh socket of --type).

    \b
    Examples:
      vsockctl sockopt list
      vsockctl sockopt list --json | jq -r 'select(.available) | .name'
    """
    env = current_env()
    with open_socket(sock_type, env.socket_factory) as sock:
        rows = [(opt, *_probe_option(sock, opt)) for opt in OPTIONS]
    if env.json:
        for opt, err, value in rows:
            env.emit(
                SockoptOption(
                    event="sockopt_option",
                    name=opt.name,
                    level=opt.level_name,
                    level_number=int(opt.level),
                    number=opt.number,
                    ctype=opt.ctype.label,
                    width=opt.ctype.width,
                    default=opt.default,
                    linux=opt.linux,
                    vmci=opt.vmci,
                    available=err is None,
                    value=json_value(opt, value),
                    errno_name=err,
                    summary=opt.summary,
                )
            )
        return
    table = Table(  # the optional columns fold under each row, last first, when narrow
        "option",
        "here",
        Column("C type", optional=True),
        Column("default", optional=True),
        Column("level", optional=True),
        Column("no.", optional=True),
        Column("Linux name", optional=True),
        Column("VMware name", optional=True),
    )
    for opt, err, _ in rows:
        here = "[green]yes[/]" if err is None else f"[red]no ({err})[/]"
        table.add_row(
            opt.name,
            here,
            f"{opt.ctype.label} ({opt.ctype.width})",
            opt.default,
            opt.level_name,
            str(opt.number),
            opt.linux or "",
            opt.vmci or "",
        )
    table.print(env)


@sockopt_group.command("get", short_help="Read options on a fresh socket.")
@click.argument("names", nargs=-1, metavar="NAME...", shell_complete=complete_option_names)
@connected_type_option
@output_options
def get_command(names: tuple[str, ...], sock_type: SocketType) -> None:
    """Read NAME... (all options when none is given) on a fresh socket of --type.

    An option the kernel does not handle shows its errno and what it means;
    the exit status is then 1.

    \b
    Examples:
      vsockctl sockopt get buffer-size SO_VMCI_BUFFER_MAX_SIZE
      vsockctl sockopt get --type seqpacket --json
    """
    env = current_env()
    try:
        options = [lookup(name) for name in names] if names else list(OPTIONS)
    except SockOptError as exc:
        raise click.BadParameter(str(exc), param_hint="'NAME'") from exc
    failed = False
    table = Table("option", Column("value", wrap=True), "C type")
    with open_socket(sock_type, env.socket_factory) as sock:
        for opt in options:
            try:
                value = get_option(sock, opt)
            except VsockError as exc:
                failed = True
                _show_get(env, table, opt, value=None, error=exc)
            else:
                _show_get(env, table, opt, value=value, error=None)
    if not env.json:
        table.print(env)
    if failed:
        raise click.exceptions.Exit(int(ExitStatus.ERROR))


def _show_get(
    env: Env, table: Table, opt: SockOpt, *, value: int | float | None, error: VsockError | None
) -> None:
    if env.json:
        record: SockoptValue = {
            "event": "sockopt_value",
            "name": opt.name,
            "value": json_value(opt, value),
        }
        if error is not None:
            record["errno"] = error.errno
            record["errno_name"] = error.meaning.name
            record["meaning"] = error.meaning.cause
        env.emit(record)
    elif error is not None:
        table.add_row(
            opt.name,
            f"[red]{escape(error.meaning.name + ': ' + error.meaning.cause)}[/]",
            opt.ctype.label,
        )
    else:
        assert value is not None
        table.add_row(opt.name, format_value(opt, value), opt.ctype.label)


@sockopt_group.command("set", short_help="Set options on a fresh socket; requested vs effective.")
@click.argument("settings", nargs=-1, required=True, type=SOCKOPT, metavar="NAME=VALUE...")
@connected_type_option
@output_options
def set_command(settings: tuple[Setting, ...], sock_type: SocketType) -> None:
    """Set NAME=VALUE... on a fresh socket of --type and show what the kernel made of them.

    Limits go first (buffer-max-size and buffer-min-size before buffer-size),
    whatever the order given. The kernel clamps buffer-size into [min, max]
    and doubles sndbuf/rcvbuf; each such change is named. Shows what a socket
    would get: use --sockopt on listen, connect, send or recv to set options
    on the sockets that carry data. Exit 1 when the kernel refuses one.

    \b
    Examples:
      vsockctl sockopt set buffer-max-size=2M buffer-size=1M
      vsockctl sockopt set buffer-size=1M          (clamped to 256K: max not raised)
      vsockctl sockopt set connect-timeout=500ms rcvlowat=64K --json
    """
    env = current_env()
    with open_socket(sock_type, env.socket_factory) as sock:
        applied = apply(sock, settings, strict=False)
    if env.json:
        for item in applied:
            env.emit(applied_record(item))
    else:
        applied_table(applied).print(env)
    if any(item.error is not None for item in applied):
        raise click.exceptions.Exit(int(ExitStatus.ERROR))
