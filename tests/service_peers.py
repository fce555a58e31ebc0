"""What the service tests run against: systemd's own tools where they exist here, and
a notification receiver standing in for the service manager (named as such).

``socket_activated`` starts a command the way systemd does, through the real
``systemd-socket-activate`` (it opens the socket, waits for the first client and
execs the command with LISTEN_FDS); ``ManagerSocket`` is the NOTIFY_SOCKET end
that systemd (pid 1) would be: a Unix datagram socket the test reads.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.peers import vsockctl_args

SYSTEMD_254 = Path("/opt/vsockctl-vm/systemd")  # bookworm-backports', unpacked
SYSTEMD_254_LIBS = SYSTEMD_254 / "usr/lib/x86_64-linux-gnu/systemd"


def systemd_notify_254(notify_socket: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """systemd's own systemd-notify (254: sd_notify over vsock) sending ``args``
    (--no-block: no BARRIER=1 after, which needs a file descriptor passed, and vsock
    passes none)."""
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket, "LD_LIBRARY_PATH": str(SYSTEMD_254_LIBS)}
    return subprocess.run([str(SYSTEMD_254 / "bin/systemd-notify"), "--no-block", *args], env=env,
                          capture_output=True, timeout=60)  # fmt: skip


class ManagerSocket:
    """The service manager's end of NOTIFY_SOCKET (a stand-in for pid 1): collects
    each datagram as the KEY=VALUE lines it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def until(self, done: Callable[[dict[str, str]], bool], timeout: float = 30) -> dict[str, str]:
        """Read messages until one for which ``done`` holds; that one."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"not among {self.messages}"
            self.sock.settimeout(left)
            data = self.sock.recv(65536).decode()
            message = dict(line.split("=", 1) for line in data.splitlines() if line)
            self.messages.append(message)
            if done(message):
                return message

    def close(self) -> None:
        self.sock.close()


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def socket_activated(
    listen: str, *vsockctl_argv: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``vsockctl ARGV`` behind systemd-socket-activate listening on ``listen``, with
    ``env`` set for it (-E: the tool passes on little of its own environment)."""
    settings = [f"--setenv={key}={value}" for key, value in (env or {}).items()]
    argv = ["systemd-socket-activate", "-l", listen, *settings, *vsockctl_args(*vsockctl_argv)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
