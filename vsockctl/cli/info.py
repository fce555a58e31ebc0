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

from vsockctl.discover.system import SystemInfo, describe_cid, findings, probe, to_record
from vsockctl.events.system import Uds
from vsockctl.exit_status import ExitStatus, exit_status_for
from vsockctl.vsock.hybrid import check_uds

from .app import cli
from .env import Env, current_env
from .errors import port_check
from .format import escape
from .options import PORT, output_options
from .table import Column, Table, print_paragraph


def _yes(flag: bool, yes: str = "yes", no: str = "no") -> str:
    return f"[green]{yes}[/]" if flag else f"[red]{no}[/]"


def render(env: Env, info: SystemInfo) -> None:
    out = env.out
    summary = Table(Column("key"), Column("value", wrap=True), header=False)
    rows = [("kernel", escape(info.kernel)), ("AF_VSOCK", _yes(info.af_vsock))]
    if info.local_cid is not None:
        rows.append(("local CID", f"{info.local_cid} ({describe_cid(info.local_cid)})"))
    else:
        rows.append(("local CID", escape(f"unknown: {info.local_cid_error}")))
    rows += [
        ("role", info.role),
        ("/dev/vsock", _yes(info.dev_vsock, "present", "absent")),
        ("/dev/vhost-vsock", _yes(info.dev_vhost_vsock, "present", "absent")),
        ("vsock_diag", _yes(info.diag_loaded, "loaded", "not loaded")),
    ]
    if (mode := info.sysctl("ns_mode")) is not None:
        rows.append(("namespace mode", f"{mode} (children: {info.sysctl('child_ns_mode')})"))
    for key, value in rows:
        summary.add_row(f"[bold]{key}[/]", value)
    out.print("[bold]vsock on this machine[/]")
    summary.print(env)

    tables = [
        Table(
            "transport", "state", Column("role", optional=True), "module",
            Column("what it serves", wrap=True, optional=True),
            title="Transports",
        ),
        Table(
            "type", "usable", Column("why not", wrap=True),
            title="Socket types (create + bind here)",
        ),
        Table(
            "feature", "here", Column("how it was found", wrap=True),
            title="Kernel features (each tried, not read off the version)",
        ),
        Table(
            "sysctl", "value", Column("what it means here", wrap=True),
            title="This network namespace (/proc/sys/net/vsock)",
        ),
    ]  # fmt: skip
    for t in info.transports:
        tables[0].add_row(
            t.name, _yes(t.available, "present", "absent"), t.role, t.module, escape(t.description)
        )
    for st in info.socket_types:
        why = escape(f"{st.errno_name}: {st.meaning}") if st.errno_name else ""
        tables[1].add_row(st.type, _yes(st.available), why)
    for f in info.features:
        here = "[dim]unknown[/]" if f.available is None else _yes(f.available)
        tables[2].add_row(f.name, here, escape(f.how))
    for sysctl in info.sysctls:
        tables[3].add_row(sysctl.name, escape(sysctl.value), escape(sysctl.meaning or ""))
    for table in tables:
        if table.rows:
            out.print()
            table.print(env)

    notes = findings(info)
    if notes:
        out.print()
        out.print("[bold]Notes[/]")
        for note in notes:
            print_paragraph(env, note, first="  - ", rest="    ")


def _info_uds(env: Env, path: str, port: int | None) -> int:
    state = check_uds(path, port)
    checked = port_check(state.port, state.port_failure) if state.port is not None else None
    if env.json:
        record = Uds(
            event="uds",
            path=path,
            exists=state.exists,
            socket=state.socket,
            accepting=state.accepting,
        )
        if checked is not None:
            record["port"] = checked
        env.emit(record)
    elif not env.quiet:
        if not state.exists:
            said = "does not exist"
        elif not state.socket:
            said = "is not a Unix socket"
        elif not state.accepting:
            said = "is a Unix socket nobody accepts on (a VMM that is gone?)"
        else:
            said = "is a live Unix socket (a hybrid vsock VMM accepts on it)"
        env.out.print(escape(f"{path} {said}"))
        if checked is not None:
            answer = checked.get("error", "OK: something listens there")
            env.out.print(escape(f"CONNECT {checked['port']}: {answer}"))
    if not state.accepting:
        return int(ExitStatus.VSOCK_UNAVAILABLE)
    if state.port_failure is not None:
        return int(exit_status_for(state.port_failure))
    return int(ExitStatus.OK)


@cli.command("info", short_help="Is vsock here: transports, local CID, socket types.")
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
def info_command(uds: str | None, port: int | None) -> None:
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
        env.emit(to_record(system))
    elif not env.quiet:
        render(env, system)
    if not system.available:
        raise click.exceptions.Exit(int(ExitStatus.VSOCK_UNAVAILABLE))
