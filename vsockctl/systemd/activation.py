"""Socket activation: the listening sockets systemd passes (sd_listen_fds(3)).

systemd opens the sockets of a ``.socket`` unit (``ListenStream=vsock::5000``,
``ListenStream=127.0.0.1:8080``, ``ListenStream=/run/x.sock``) and starts the
service with them as file descriptors 3, 4, ... and the environment
``LISTEN_PID`` (the pid they are meant for), ``LISTEN_FDS`` (how many) and
``LISTEN_FDNAMES`` (colon-separated names, ``FileDescriptorName=``). A process
that is not ``LISTEN_PID`` must leave them alone (they were meant for its
parent). The variables are removed once read, so children do not take them too.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass

LISTEN_FDS_START = 3
VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class ActivationError(Exception):
    """What systemd passed cannot serve this command (the message says why)."""


@dataclass(frozen=True)
class Inherited:
    """One socket systemd passed: the socket, and its name."""

    sock: socket.socket
    name: str

    @property
    def family(self) -> int:
        return int(self.sock.family)


def listen_fds(environ: MutableMapping[str, str] | None = None) -> list[Inherited]:
    """The sockets passed to this process (none when not socket-activated). Each is
    close-on-exec, as sd_listen_fds() leaves them; the variables are removed."""
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    names = env.get("LISTEN_FDNAMES", "").split(":")
    if pid is None or count is None:
        return []
    for name in VARIABLES:
        env.pop(name, None)
    try:
        if int(pid) != os.getpid():
            return []  # meant for the process that started us
        n = int(count)
    except ValueError as exc:
        raise ActivationError(f"LISTEN_PID={pid!r} LISTEN_FDS={count!r}: not numbers") from exc
    passed = []
    for index in range(n):
        fd = LISTEN_FDS_START + index
        try:
            os.set_inheritable(fd, False)
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ActivationError(f"file descriptor {fd} from systemd is not a socket") from exc
        name = names[index] if index < len(names) and names[index] else "unknown"
        passed.append(Inherited(sock, name))
    return passed


def is_listening(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


def choose(passed: list[Inherited], wanted: str, sock_type: int = socket.SOCK_STREAM) -> Inherited:
    """The one listening socket of ``sock_type`` among ``passed`` for a command that
    serves one (the others are closed); ``wanted`` says what it serves, for the
    message when there is none or several."""
    listening = [p for p in passed if p.sock.type == sock_type and is_listening(p.sock)]
    for p in passed:
        if len(listening) != 1 or p is not listening[0]:
            p.sock.close()
    if len(listening) == 1:
        return listening[0]
    kind = "seqpacket" if sock_type == socket.SOCK_SEQPACKET else "stream"
    if not listening:
        raise ActivationError(
            f"systemd passed {len(passed)} socket(s) and none is a listening {kind} socket "
            f"for {wanted} (a .socket unit with Accept=no)"
        )
    named = ", ".join(p.name for p in listening)
    raise ActivationError(
        f"systemd passed {len(listening)} listening sockets ({named}); {wanted} serves one"
    )
