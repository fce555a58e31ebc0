"""vsockctl forward against socat doing the same forward (TCP -> vsock, with fork).

Runs where vsock carries data over CID 1 (inside the test VM):

    scripts/vmrun 'python benchmarks/forward.py'
    scripts/vmrun 'python benchmarks/forward.py --size 128M --runs 3'

Prints, for each forwarder and for a direct vsock transfer:

- bulk: one connection, SIZE bytes client -> TCP 127.0.0.1 -> forwarder -> vsock
  CID 1 -> a receiver that discards them; the median goodput of RUNS;
- rate: connections per second, one after another (connect, 1 byte each way, close),
  and the same straight to the vsock service: the most any forwarder could reach;
- 100 connections at once, 1 MiB each way, checked byte for byte;
- resident memory of the forwarder holding 256 idle connections.

Bulk and rate are medians over rounds in which the direct path and each forwarder
take one turn each, so the machine's drift over minutes falls on all alike.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from vsockctl.address import VsockAddress
from vsockctl.constants import VMADDR_CID_LOCAL
from vsockctl.sockets import connect, listen
from vsockctl.units import parse_size

CHUNK = 1 << 20
TARGET_PORT = 9300


class Target:
    """The vsock service behind the forwarder: per connection, ``serve(conn)``."""

    def __init__(self, port: int, serve: Callable[[socket.socket], None]) -> None:
        self.sock = listen(VsockAddress(VMADDR_CID_LOCAL, port), backlog=1024)
        self.serve = serve
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            self.serve(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.close()


def discard(conn: socket.socket) -> None:
    view = memoryview(bytearray(CHUNK))
    while conn.recv_into(view):
        pass
    conn.sendall(b"k")  # the receiver has everything: the clock stops


def echo_digest(conn: socket.socket) -> None:
    digest = hashlib.sha256()
    while data := conn.recv(CHUNK):
        digest.update(data)
    conn.sendall(digest.digest())


def pong(conn: socket.socket) -> None:
    conn.sendall(conn.recv(1))


def hold(conn: socket.socket) -> None:
    conn.recv(1)


@contextlib.contextmanager
def forwarder(kind: str, tcp_port: int, vsock_port: int) -> Iterator[subprocess.Popen[bytes]]:
    sides = [f"tcp:127.0.0.1:{tcp_port}", f"vsock:1:{vsock_port}"]
    if kind == "vsockctl":
        args = [sys.executable, "-m", "vsockctl", "-q", "forward", *sides]
    else:
        args = ["socat", f"TCP-LISTEN:{tcp_port},bind=127.0.0.1,fork,reuseaddr"]
        args += [f"VSOCK-CONNECT:1:{vsock_port}"]
    proc = subprocess.Popen(args)
    try:
        for _ in range(1200):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", tcp_port)) == 0:
                    break
            time.sleep(0.05)
        time.sleep(0.2)  # socat serves that probe in a child of its own
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


def tcp(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_all_of(sock: socket.socket, size: int) -> float:
    """Send ``size`` bytes, half-close, wait for the receiver's byte; Gbit/s."""
    block = memoryview(bytes(CHUNK))
    started = time.perf_counter()
    left = size
    while left:
        n = min(left, CHUNK)
        sock.sendall(block[:n])
        left -= n
    sock.shutdown(socket.SHUT_WR)
    assert sock.recv(1) == b"k"
    return size * 8 / (time.perf_counter() - started) / 1e9


def bulk(open_client: Callable[[], socket.socket], size: int, runs: int) -> float:
    figures = []
    for _ in range(runs):
        with open_client() as sock:
            try:
                figures.append(send_all_of(sock, size))
            except OSError as exc:  # a forwarder that failed: say so, measure the rest
                print(f"  (a run failed: {exc})")
    return statistics.median(figures) if figures else 0.0


def rate(open_client: Callable[[], socket.socket], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        with open_client() as sock:
            sock.sendall(b"p")
            assert sock.recv(1) == b"p"
    return count / (time.perf_counter() - started)


def concurrent(port: int) -> tuple[int, float]:
    payloads = [hashlib.sha256(bytes([i])).digest() * 32768 for i in range(100)]  # 1 MiB each

    def one(payload: bytes) -> bool:
        with tcp(port) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            return sock.recv(64) == hashlib.sha256(payload).digest()

    started = time.perf_counter()
    with ThreadPoolExecutor(100) as pool:
        exact = sum(pool.map(one, payloads))
    return exact, time.perf_counter() - started


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its children (socat forks one per connection)."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{pid}/children") as children:
        pids += [int(child) for child in children.read().split()]
    for one in pids:
        with contextlib.suppress(OSError), open(f"/proc/{one}/status") as status:
            total += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return total / 1024


def idle_rss(proc: subprocess.Popen[bytes], port: int, count: int) -> float:
    clients = [tcp(port) for _ in range(count)]
    try:
        time.sleep(2)
        return rss_mib(proc.pid)
    finally:
        for client in clients:
            client.close()


def in_rounds(
    kinds: list[str],
    port: int,
    serve: Callable[[socket.socket], None],
    rounds: int,
    measure: Callable[[Callable[[], socket.socket]], float],
) -> dict[str, list[float]]:
    """``measure`` straight to a vsock ``serve``ice and through each forwarder of
    ``kinds``, once each per round, starting one further on each round."""
    clients: dict[str, Callable[[], socket.socket]] = {
        "direct": lambda: connect(VsockAddress(VMADDR_CID_LOCAL, port))
    }
    figures: dict[str, list[float]] = {"direct": [], **{kind: [] for kind in kinds}}
    target = Target(port, serve)
    with contextlib.ExitStack() as stack:
        for index, kind in enumerate(kinds):
            tcp_port = 18000 + port % 100 * 10 + index
            stack.enter_context(forwarder(kind, tcp_port, port))
            clients[kind] = partial(tcp, tcp_port)
        names = list(clients)
        for turn in range(rounds):
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                figures[name].append(measure(clients[name]))
    target.close()
    return figures


def load_figures(kind: str, tcp_port: int) -> list[str]:
    """100 at once and idle RSS through ``kind``, each with a fresh forwarder."""
    lines = []
    vsock_port = TARGET_PORT + 10 + tcp_port % 100
    for serve in (echo_digest, hold):
        service = Target(vsock_port, serve)
        with forwarder(kind, tcp_port, vsock_port) as proc:
            if serve is echo_digest:
                exact, seconds = concurrent(tcp_port)
                lines.append(f"100 x 1 MiB at once: {exact} of 100 exact in {seconds:.1f} s")
            else:
                lines.append(
                    f"RSS with 256 idle connections {idle_rss(proc, tcp_port, 256):.1f} MiB"
                )
        service.close()
        vsock_port += 100
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M", help="bytes per bulk run (default 256M)")
    parser.add_argument("--runs", type=int, default=5, help="bulk runs, median (default 5)")
    parser.add_argument("--rate-count", type=int, default=300, help="connections per rate run")
    parser.add_argument("--rate-rounds", type=int, default=3, help="rate runs, median (default 3)")
    args = parser.parse_args()
    size = parse_size(args.size)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    kinds = ["vsockctl"] + (["socat"] if shutil.which("socat") else [])
    print(
        f"forward benchmark: TCP 127.0.0.1 -> forwarder -> vsock CID 1, {args.size} x {args.runs}"
    )

    # Each figure is a median over rounds in which the direct path and every forwarder
    # take a turn each: this machine's speed drifts over minutes, and runs of one
    # kind in a row would compare its good minutes with another's bad ones.
    bulk_runs = in_rounds(
        kinds, TARGET_PORT, discard, args.runs, lambda client: bulk(client, size, 1)
    )
    direct = statistics.median(bulk_runs["direct"])
    print(f"  direct vsock, no forwarder      bulk {direct:6.2f} Gbit/s")
    for kind in kinds:
        figure = statistics.median(bulk_runs[kind])
        ratio = figure / direct
        print(f"  {kind:<15} forward          bulk {figure:6.2f} Gbit/s ({ratio:.2f}x direct)")

    # The ceiling for a forwarder's rate: this client and this service, no forwarder.
    rates = in_rounds(
        kinds, TARGET_PORT + 5, pong, args.rate_rounds, lambda client: rate(client, args.rate_count)
    )
    direct_rate = statistics.median(rates["direct"])
    print(f"  direct vsock, no forwarder      rate {direct_rate:7.1f} connections/s")
    for kind in kinds:
        figure = statistics.median(rates[kind])
        print(
            f"  {kind:<15} forward          rate {figure:7.1f} connections/s "
            f"({figure / direct_rate:.2f}x direct)"
        )
    for index, kind in enumerate(kinds):
        print(f"  {kind:<9} " + "; ".join(load_figures(kind, 18100 + index)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
