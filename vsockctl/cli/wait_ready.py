"""``vsockctl wait-ready``: the host end of a guest's sd_notify, until READY=1."""

from __future__ import annotations

import time

import click

from vsockctl.events.service import Notification as NotificationRecord
from vsockctl.events.service import WaitingReady
from vsockctl.exit_status import ExitStatus
from vsockctl.systemd.ready import Notification, ReadyListener
from vsockctl.vsock.sockets import SocketType

from .app import cli
from .env import Env, current_env
from .errors import error_record
from .options import CID, DURATION, PORT, output_options


def _show(env: Env, note: Notification) -> None:
    if env.json:
        env.emit(
            NotificationRecord(
                event="notification",
                peer=note.peer,
                socket_type=note.socket_type,
                fields=dict(note.fields),
                ready=note.ready,
            )
        )
        return
    if env.verbose:
        env.message(f"from {note.peer} ({note.socket_type}):")
    env.stdout.write(b"".join(f"{key}={value}\n".encode() for key, value in note.fields))
    env.stdout.flush()


@cli.command("wait-ready", short_help="Wait for a guest's systemd to say READY=1 over vsock.")
@click.option("--port", type=PORT, required=True, help="The port of vmm.notify_socket.")
@click.option("--cid", type=CID, default="any", show_default=True, help="Local CID to bind.")
@click.option(
    "--uds",
    metavar="PATH",
    help="The guest is behind a hybrid VMM's socket PATH: listen on PATH_PORT.",
)
@click.option(
    "--type",
    "sock_type",
    type=click.Choice(["seqpacket", "stream"]),
    help="seqpacket for vsock:2:PORT (the default), stream for vsock-stream:2:PORT "
    "(and with --uds).",
)
@click.option("--timeout", type=DURATION, help="Give up after this long (exit 5) [default: never].")
@output_options
def wait_ready_command(
    port: int, cid: int, uds: str | None, sock_type: str | None, timeout: float | None
) -> None:
    """Print a guest's systemd notifications until it says READY=1.

    systemd 254 and later in a guest sends READY=1, STATUS=... and
    X_SYSTEMD_UNIT_ACTIVE=... to the address in the vmm.notify_socket
    credential: vsock:2:PORT tries a datagram, then (where the transport has
    none: virtio) a seqpacket message; vsock-stream:2:PORT sends over a stream
    (--type stream here: vsock's stream and seqpacket sockets share one port
    space, so one port listens for one of them, and for datagrams where there
    are any). Each KEY=VALUE line goes to stdout as it comes; the exit status
    is 0 after READY=1, or 5 when --timeout passes first. Behind Firecracker or
    Cloud Hypervisor the guest's connection arrives on the hybrid socket
    PATH_PORT (--uds PATH): give the guest vsock-stream:2:PORT there.

    \b
    Examples:
      qemu-system-x86_64 ... -device vhost-vsock-pci,guest-cid=3 \\
        -smbios type=11,value=io.systemd.credential:vmm.notify_socket=vsock:2:5000 &
      vsockctl wait-ready --port 5000 --timeout 2m && ssh vsock/3
      vsockctl wait-ready --port 5000 --type stream      for vsock-stream:2:5000
      vsockctl wait-ready --uds /run/fc/v.sock --port 5000 --json
    """
    env = current_env()
    deadline = time.monotonic() + timeout if timeout is not None else float("inf")
    if uds is not None and sock_type == "seqpacket":
        raise click.UsageError("a hybrid socket carries streams only: drop --type seqpacket")
    connected = (
        SocketType.STREAM if uds is not None or sock_type == "stream" else SocketType.SEQPACKET
    )
    with ReadyListener(port, cid, uds, env.socket_factory, connected) as waiting:
        where = f"{uds}_{waiting.port}" if uds is not None else f"{_cid(cid)}:{waiting.port}"
        if env.json:
            env.emit(
                WaitingReady(
                    event="waiting_ready",
                    address=where,
                    port=waiting.port,
                    socket_types=list(waiting.opened),
                    unavailable=waiting.unavailable,
                )
            )
        else:
            lacking = "".join(
                f"; no {kind} here: {why}" for kind, why in waiting.unavailable.items()
            )
            env.message(f"waiting for READY=1 on {where} ({', '.join(waiting.opened)}{lacking})")
        for note in waiting.notifications(deadline):
            _show(env, note)
            if note.ready:
                return
    said = f"no READY=1 within {timeout:g} s on {where}"
    env.stderr.write(f"vsockctl: {said}\n")
    if env.json:
        env.emit(error_record(said, ExitStatus.TIMED_OUT))
    raise click.exceptions.Exit(int(ExitStatus.TIMED_OUT))


def _cid(cid: int) -> str:
    from vsockctl.vsock.address import VsockAddress

    return str(VsockAddress(cid, 0)).rpartition(":")[0]
