"""Telling systemd how the service is doing (sd_notify(3)), and its watchdog.

``NOTIFY_SOCKET`` is where to send: a Unix datagram socket (``/run/...``, or
``@name`` in the abstract namespace) from the service manager on this
machine, or, since systemd 254, ``vsock:CID:PORT`` (a datagram, else a
seqpacket message), ``vsock-stream:CID:PORT``, ``vsock-dgram:``,
``vsock-seqpacket:``: a VMM on the host waiting for a guest's ``READY=1``.
A message is newline-separated ``KEY=VALUE`` lines: ``READY=1``,
``STATUS=text``, ``STOPPING=1``, ``WATCHDOG=1``. With ``WATCHDOG_USEC`` set
(and ``WATCHDOG_PID`` ours, or unset), ``WATCHDOG=1`` must come at least
that often; :class:`Notifier` sends it every half period from a thread.

Sending is best effort, as sd_notify's: a manager that went away must not
take the service with it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Mapping

from vsockctl.vsock.constants import AF_VSOCK

_VSOCK_TYPES = {
    "vsock": (socket.SOCK_DGRAM, socket.SOCK_SEQPACKET, socket.SOCK_STREAM),
    "vsock-dgram": (socket.SOCK_DGRAM,),
    "vsock-seqpacket": (socket.SOCK_SEQPACKET,),
    "vsock-stream": (socket.SOCK_STREAM,),
}


def send(address: str, message: bytes) -> bool:
    """One notification to ``address`` (a NOTIFY_SOCKET value); whether it went."""
    scheme, colon, rest = address.partition(":")
    try:
        if colon and scheme in _VSOCK_TYPES:
            cid, _, port = rest.rpartition(":")
            return _send_vsock(_VSOCK_TYPES[scheme], (int(cid, 0), int(port, 0)), message)
        path = "\0" + address[1:] if address.startswith("@") else address
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, path)
        return True
    except (OSError, ValueError):
        return False


def _send_vsock(types: tuple[int, ...], address: tuple[int, int], message: bytes) -> bool:
    """As sd_notify: the next type only when a socket of this one cannot be made (a
    datagram is ENODEV on virtio); a connected type ends with a write shutdown and
    waits for the receiver to close, so the message is read before the end."""
    for index, sock_type in enumerate(types):
        try:
            sock = socket.socket(AF_VSOCK, sock_type | socket.SOCK_CLOEXEC)
        except OSError:
            if index + 1 < len(types):
                continue
            raise
        with sock:
            sock.settimeout(5)
            if sock_type == socket.SOCK_DGRAM:
                sock.sendto(message, address)
                return True
            sock.connect(address)
            sock.sendall(message)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)
            return True
    return False


class Notifier:
    """sd_notify for a service: READY, STATUS, STOPPING and the watchdog's pings.

    Does nothing when ``NOTIFY_SOCKET`` is unset (not run by systemd). The
    variables are removed once read, so children do not notify in our name.
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.pop("NOTIFY_SOCKET", None)
        self.watchdog_usec = _watchdog_usec(env)
        for name in ("WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        self._stop = threading.Event()
        self._status: Callable[[], str] | None = None
        self.sent: list[str] = []  # what went out, for -v and tests

    @property
    def active(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> None:
        if self.address is None:
            return
        text = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        if send(self.address, text.encode() + b"\n"):
            self.sent.append(text)

    def ready(self, status: Callable[[], str]) -> None:
        """Listening: READY=1 with the status; then the status whenever it changes."""
        self._status = status
        self.notify(ready=1, status=status())
        if self.address is not None:
            threading.Thread(target=self._beat, name="sd-notify", daemon=True).start()

    def stopping(self) -> None:
        self._stop.set()
        if self._status is not None:
            self.notify(stopping=1, status="stopping")

    def _beat(self) -> None:
        """The watchdog's ping every half period (if asked for) and the status when it
        changed, every 5 s at most without a watchdog."""
        period = self.watchdog_usec / 2e6 if self.watchdog_usec else 5.0
        last = self._status() if self._status else ""
        while not self._stop.wait(period):
            fields: dict[str, str | int] = {}
            if self.watchdog_usec:
                fields["watchdog"] = 1
            status = self._status() if self._status else ""
            if status != last:
                fields["status"] = last = status
            if fields:
                self.notify(**fields)


def _watchdog_usec(env: Mapping[str, str]) -> int:
    """WATCHDOG_USEC when it is meant for us (WATCHDOG_PID ours, or unset), else 0."""
    with contextlib.suppress(ValueError):
        pid = env.get("WATCHDOG_PID")
        if pid is None or int(pid) == os.getpid():
            return max(0, int(env.get("WATCHDOG_USEC", "0")))
    return 0
