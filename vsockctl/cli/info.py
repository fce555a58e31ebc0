"""``vsockctl info``: is vsock here, which transports, what is my CID, which types work.

Sample::

    vsock on this machine            kernel 6.1.0-56-amd64
      AF_VSOCK     yes               local CID   3 (guest)
    Transports
      virtio      present   guest    virtio guest: KVM/QEMU, Firecracker, ...
      loopback    absent    loopback CID 1, this machine to itself
"""

from __future__ import annotations

import click

from vsockctl.hybrid import check_uds
from vsockctl.status import ExitStatus
from vsockctl.system import SystemInfo, describe_cid, findings, probe, to_dict

from .app import cli
from .env import Env, current_env
from .format import escape
from .options import PORT, output_options


def _yes(flag: bool, yes: str = "yes", no: str = "no") -> str:
    return f"[green]{yes}[/]" if flag else f"[red]{no}[/]"


def render(env: Env, info: SystemInfo) -> None:
    out = env.out
    from rich.table import Table  # imported here: rich is slow to load

    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("kernel", info.kernel)
    summary.add_row("AF_VSOCK", _yes(info.af_vsock))
    if info.local_cid is not None:
        summary.add_row("local CID", f"{info.local_cid} ({describe_cid(info.local_cid)})")
    else:
        summary.add_row("local CID", f"unknown: {info.local_cid_error}")
    summary.add_row("role", info.role)
    summary.add_row("/dev/vsock", _yes(info.dev_vsock, "present", "absent"))
    summary.add_row("/dev/vhost-vsock", _yes(info.dev_vhost_vsock, "present", "absent"))
    summary.add_row("vsock_diag", _yes(info.diag_loaded, "loaded", "not loaded"))
    if info.ns_mode is not None:
        summary.add_row("namespace mode", f"{info.ns_mode} (children: {info.child_ns_mode})")
    out.print("[bold]vsock on this machine[/]")
    out.print(summary)

    tables: list[tuple[str, tuple[str, ...], list[tuple[str, ...]]]] = [
        (
            "Transports",
            ("transport", "state", "role", "module", "what it serves"),
            [
                (t.name, _yes(t.present, "present", "absent"), t.role, t.module, t.description)
                for t in info.transports
            ],
        ),
        (
            "Socket types (create + bind here)",
            ("type", "usable", "why not"),
            [
                (s.type, _yes(s.usable), escape(f"{s.error}: {s.meaning}") if s.error else "")
                for s in info.socket_types
            ],
        ),
        (
            "Kernel features (each tried, not read off the version)",
            ("feature", "here", "how it was found"),
            [
                (
                    f.name,
                    "[dim]unknown[/]" if f.available is None else _yes(f.available),
                    escape(f.how),
                )
                for f in info.features
            ],
        ),
    ]
    for title, columns, rows in tables:
        if not rows:
            continue
        table = Table(title=title, title_justify="left", box=None, padding=(0, 2))
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        out.print()
        out.print(table)

    notes = findings(info)
    if notes:
        out.print()
        out.print("[bold]Notes[/]")
        for note in notes:
            out.print(f"  - {note}")


def _info_uds(env: Env, path: str, port: int | None) -> int:
    result = check_uds(path, port)
    if env.json:
        env.emit({"event": "uds", **result})
    elif not env.quiet:
        if not result["exists"]:
            state = "does not exist"
        elif not result["socket"]:
            state = "is not a Unix socket"
        elif not result["accepting"]:
            state = "is a Unix socket nobody accepts on (a VMM that is gone?)"
        else:
            state = "is a live Unix socket (a hybrid vsock VMM accepts on it)"
        env.out.print(escape(f"{path} {state}"))
        checked = result.get("port")
        if isinstance(checked, dict):
            answer = "OK: something listens there" if checked["open"] else checked["error"]
            env.out.print(escape(f"CONNECT {checked['port']}: {answer}"))
    if not result["accepting"]:
        return int(ExitStatus.VSOCK_UNAVAILABLE)
    checked = result.get("port")
    if isinstance(checked, dict) and not checked["open"]:
        return int(checked["status"])
    return int(ExitStatus.OK)


@cli.command(short_help="Is vsock here: transports, local CID, socket types.")
@click.option(
    "--uds",
    metavar="PATH",
    help="Instead: is PATH a live hybrid vsock socket (Firecracker, Cloud Hypervisor)?",
)
@click.option(
    "--port",
    type=PORT,
    help="With --uds: also ask the VMM to connect to this guest port (CONNECT PORT).",
)
@output_options
def info(uds: str | None, port: int | None) -> None:
    """Is vsock here, which transports are loaded, what is my CID, which socket types work.

    Reads /sys/module, /dev/vsock (the local-CID ioctl) and creates and binds
    one socket of each type. It never connects or sends anything.

    Exits 0 when vsock can carry data here (AF_VSOCK and at least one
    transport), 3 when it cannot.

    With --uds PATH it looks at a hybrid vsock socket instead: whether PATH
    is a Unix socket something accepts on (exit 0, else 3) and, with --port,
    whether the VMM connects that guest port (exit 4 when it closes: nothing
    listens there; 8 for a reply that is not OK).

    \b
    Examples:
      vsockctl info
      vsockctl info --json | jq .local_cid
      vsockctl -q info && echo "vsock works here"
      vsockctl info --uds /run/firecracker/v.sock --port 52
    """
    env = current_env()
    if uds is not None:
        raise click.exceptions.Exit(_info_uds(env, uds, port))
    if port is not None:
        raise click.UsageError("--port goes with --uds")
    system = probe(env.probe_paths, env.socket_factory)
    if env.json:
        env.emit({"event": "info", **to_dict(system)})
    elif not env.quiet:
        render(env, system)
    if not system.usable:
        raise click.exceptions.Exit(int(ExitStatus.VSOCK_UNAVAILABLE))
