"""``vsockctl ls``: the vsock sockets on this machine and the processes that own them."""

from __future__ import annotations

import click

from vsockctl.discover.diag import VsockSocket, dump, with_owners
from vsockctl.events.system import Socket
from vsockctl.vsock.sockets import SocketType

from .app import cli
from .env import current_env
from .format import escape
from .options import CID, PORT, WholeRange, output_options
from .table import Column, Table


def _owners_text(sock: VsockSocket) -> str:
    if not sock.owners:
        return "?"
    return ", ".join(f"{o.name or '?'}[{o.pid}]" for o in sock.owners)


def _record(sock: VsockSocket) -> Socket:
    return {
        "event": "socket",
        "type": sock.type_name,
        "state": sock.state_name,
        "local": str(sock.local),
        "local_cid": sock.local.cid,
        "local_port": sock.local.port,
        "peer": str(sock.peer),
        "peer_cid": sock.peer.cid,
        "peer_port": sock.peer.port,
        "shutdown": sock.shutdown_name,
        "inode": sock.inode,
        "cookie": sock.cookie,
        "processes": [{"pid": o.pid, "name": o.name} for o in sock.owners],
    }


def _matches(
    sock: VsockSocket,
    *,
    listening: bool,
    sock_type: str | None,
    port: int | None,
    cid: int | None,
    pid: int | None,
) -> bool:
    return (
        (not listening or sock.listening)
        and (sock_type is None or sock.type_name == sock_type)
        and (port is None or port in (sock.local.port, sock.peer.port))
        and (cid is None or cid in (sock.local.cid, sock.peer.cid))
        and (pid is None or any(o.pid == pid for o in sock.owners))
    )


@cli.command("ls", short_help="The vsock sockets here and the processes that own them.")
@click.option("-l", "--listening", is_flag=True, help="Only listening sockets.")
@click.option(
    "-t",
    "--type",
    "sock_type",
    type=click.Choice([t.value for t in SocketType], case_sensitive=False),
    help="Only sockets of this type.",
)
@click.option("--port", type=PORT, help="Only sockets with this local or peer port.")
@click.option("--cid", type=CID, help="Only sockets with this local or peer CID.")
@click.option("--pid", type=WholeRange(min=1), help="Only sockets this process holds.")
@output_options
def ls_command(
    *, listening: bool, sock_type: str | None, port: int | None, cid: int | None, pid: int | None
) -> None:
    """List vsock sockets: type, state, local and peer CID:port, shutdown state,
    inode and owning processes.

    Asks the kernel through sock_diag netlink (the vsock_diag module, as
    'ss --vsock' does), which holds listening and connected sockets; sockets
    only created or bound do not appear. Seqpacket sockets are named (ss
    prints '???'). Owners come from /proc/PID/fd; a process that cannot be
    inspected (another user's, without root) shows as '?'. Without vsock_diag
    the exit status is 3.

    Only this network namespace's sockets are listed: sock_diag answers for
    the namespace it is asked from. Run it with 'ip netns exec NAME' or
    'nsenter -n -t PID' to see another's (on Linux 7+, a namespace in vsock's
    local mode also has ports and loopback of its own: 'vsockctl info').

    \b
    Examples:
      vsockctl ls
      vsockctl ls --listening
      vsockctl ls --port 5000 --json | jq '.processes[].name'
      vsockctl ls --type seqpacket --pid 1234
    """
    env = current_env()
    sockets = [
        s
        for s in with_owners(dump(env.socket_factory))
        if _matches(s, listening=listening, sock_type=sock_type, port=port, cid=cid, pid=pid)
    ]
    sockets.sort(key=lambda s: (not s.listening, s.local.port, s.peer.port, s.inode))
    if env.json:
        for sock in sockets:
            env.emit(_record(sock))
        return
    if not sockets:
        env.message(
            "no vsock sockets match"
            if any((listening, sock_type, port, cid, pid))
            else "no listening or connected vsock sockets in this network namespace"
        )
        return
    table = Table(
        "type",
        "state",
        "local",
        "peer",
        Column("shutdown", optional=True),
        Column("inode", optional=True),
        Column("process", wrap=True),
    )
    for sock in sockets:
        table.add_row(
            sock.type_name,
            sock.state_name,
            str(sock.local),
            str(sock.peer),
            sock.shutdown_name,
            str(sock.inode),
            escape(_owners_text(sock)),
        )
    table.print(env)
    env.message("(this network namespace's sockets only)")
