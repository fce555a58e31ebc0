"""Connection rate through a forwarder, for ``benchmarks/forward.py``: a one-process
pong service, a one-process client storm, the forwarder pinned to a CPU of its own
and its CPU time per connection."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import socket
import time
from collections.abc import Iterator

from vsockctl.vsock.constants import AF_VSOCK, VMADDR_CID_LOCAL

CPUS = sorted(os.sched_getaffinity(0))
# The forwarder measured runs on one CPU, the clients and the service on another
# (forward.py says why); on a machine with one CPU, all share it.
FORWARDER_CPU, LOAD_CPU = {CPUS[0]}, {CPUS[-1]}


def pong_service(listener: socket.socket) -> None:
    """Send each connection's byte back and close it: one process and one epoll,
    so that the service costs little next to the forwarders it measures."""
    pin(os.getpid(), LOAD_CPU)
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    while True:
        for fd, _ in poller.poll():
            if fd != listener.fileno():
                with contextlib.suppress(OSError), conns.pop(fd) as conn:
                    conn.send(conn.recv(1))  # the close takes it out of the epoll
                continue
            with contextlib.suppress(BlockingIOError):
                while True:
                    conn, _ = listener.accept()
                    conns[conn.fileno()] = conn
                    poller.register(conn.fileno(), select.EPOLLIN)


@contextlib.contextmanager
def pong(listener: socket.socket) -> Iterator[None]:
    """:func:`pong_service` on ``listener``, in a process of its own."""
    service = multiprocessing.Process(target=pong_service, args=(listener,), daemon=True)
    service.start()
    listener.close()  # the service has its own
    try:
        yield
    finally:
        service.kill()
        service.join()


def open_client(side: str) -> socket.socket:
    """A connection to ``side``: tcp:127.0.0.1:PORT, unix:PATH or vsock:1:PORT, made
    with as few calls as can be (the clients share a CPU with the service)."""
    scheme, _, rest = side.partition(":")
    address: str | tuple[str | int, int] = rest
    family: int = socket.AF_UNIX
    if scheme != "unix":
        port = int(rest.rpartition(":")[2])
        family, address = (
            (socket.AF_INET, ("127.0.0.1", port))
            if scheme == "tcp"
            else (AF_VSOCK, (VMADDR_CID_LOCAL, port))
        )
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def storm(side: str, count: int, at_once: int) -> float:
    """``count`` connections to ``side``, ``at_once`` under way, from one process and
    one epoll (light next to the forwarders it measures); connections/s."""
    pin(os.getpid(), LOAD_CPU)
    poller = select.epoll()
    socks: dict[int, socket.socket] = {}

    def start() -> None:
        sock = open_client(side)
        sock.sendall(b"p")
        socks[sock.fileno()] = sock
        poller.register(sock.fileno(), select.EPOLLIN)

    started = time.perf_counter()
    for _ in range(min(at_once, count)):
        start()
    done = 0
    while done < count:
        for fd, _ in poller.poll():
            with socks.pop(fd) as sock:  # the close takes it out of the epoll
                assert sock.recv(1) == b"p"
            done += 1
            if done + len(socks) < count:
                start()
    return count / (time.perf_counter() - started)


def pin(pid: int, cpus: set[int]) -> None:
    """Run ``pid`` and its threads (and the processes and threads they start) on ``cpus``."""
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(task), cpus)


def cpu_seconds(pid: int | None) -> float:
    """CPU time of ``pid`` and of its children it has reaped (socat's forks)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def rate(side: str, pid: int | None, count: int, at_once: int) -> tuple[float, float]:
    """Connections per second to ``side``, ``at_once`` under way, and the milliseconds
    of CPU ``pid`` (on FORWARDER_CPU) spent on each."""
    if pid is not None:
        pin(pid, FORWARDER_CPU)
    with multiprocessing.Pool(1) as pool:
        pool.apply(storm, (side, 4, 2))  # the client process up and warm
        before = cpu_seconds(pid)
        figure = pool.apply(storm, (side, count, at_once))
    time.sleep(0.5)  # socat reaps the children of the last connections
    return figure, (cpu_seconds(pid) - before) / count * 1000
