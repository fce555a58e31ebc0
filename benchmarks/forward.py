"""vsockctl forward against socat doing the same forward (TCP -> vsock, with fork).

Runs where vsock carries data over CID 1 (inside the test VM):

    scripts/vmrun 'python benchmarks/forward.py'
    scripts/vmrun 'python benchmarks/forward.py --size 128M --runs 3'

Prints, for each forwarder and for a direct vsock transfer:

- bulk: one connection, SIZE bytes client -> TCP 127.0.0.1 -> forwarder -> vsock
  CID 1 -> a receiver that discards them; the median goodput of RUNS, to a
  receiver with the kernel's default vsock buffer and to one with vsockctl recv's;
- rate: connections per second (connect, 1 byte each way, close), one at a time
  (each waits for the last: latency) and more at once (--at-once: what a forwarder
  sustains), with the forwarder's CPU time per connection (socat's includes its
  forked children). The forwarder runs on a CPU of its own, the clients and the
  service on another: on the test VM's 2 vCPUs they would otherwise take CPU
  from the forwarder (socat's forks spread over both, one event loop does not),
  and the figure would measure the clients as much as the forwarder. The same
  straight to the service ("direct") is the most the clients' CPU can drive;
- 100 connections at once, 1 MiB each way, checked byte for byte;
- resident memory of the forwarder holding 256 idle connections.

Bulk and rate are medians over rounds in which the direct path and each forwarder
take one turn each, so the machine's drift over minutes falls on all alike.

``--via unix`` measures the rate alone, Unix socket -> forwarder -> Unix socket:
no vsock and no TCP, so it runs on any machine, and on one whose CPU is not
emulated it shows what the forwarders themselves cost.
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
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from forward_rate import FORWARDER_CPU, LOAD_CPU, open_client, pong, rate
from rounds import turns

from vsockctl.cli.options import TRANSFER_BUFFER_DEFAULTS
from vsockctl.transfer.engine import DEFAULT_CHUNK
from vsockctl.units import format_size, parse_size
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.constants import VMADDR_CID_LOCAL
from vsockctl.vsock.sockets import listen
from vsockctl.vsock.sockopt_apply import apply
from vsockctl.vsock.sockopts import Setting

CHUNK = 1 << 20
TARGET_PORT = 9300
# Bulk's receivers: the kernel's default vsock buffer and the one vsockctl recv sets.
# With the first, the window of unread bytes is small enough that the forwarded
# path's extra hop shows in each wait for credit.
RECEIVER_BUFFERS: tuple[tuple[Sequence[Setting], str], ...] = (
    ((), "the kernel's 256 KiB vsock buffer"),
    (TRANSFER_BUFFER_DEFAULTS, f"vsockctl recv's {format_size(DEFAULT_CHUNK)}"),
)
T = TypeVar("T")
Clients = dict[str, tuple[str, int | None]]  # name: (the side its clients connect to, its pid)


class Target:
    """The vsock service behind the forwarder: per connection, ``serve(conn)``."""

    def __init__(
        self,
        port: int,
        serve: Callable[[socket.socket], None],
        settings: Sequence[Setting] = (),
    ) -> None:
        self.sock = listen(VsockAddress(VMADDR_CID_LOCAL, port), backlog=1024)
        apply(self.sock, settings)  # its connections take the listener's options
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


def hold(conn: socket.socket) -> None:
    conn.recv(1)


def socat_address(side: str, *, listening: bool) -> str:
    scheme, _, rest = side.partition(":")
    if scheme == "tcp":
        port = rest.rpartition(":")[2]
        return (
            f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,backlog=1024"
            if listening
            else f"TCP:{rest}"
        )
    if scheme == "unix":
        return f"UNIX-LISTEN:{rest},fork,backlog=1024" if listening else f"UNIX-CONNECT:{rest}"
    return f"VSOCK-CONNECT:{rest}"


@contextlib.contextmanager
def forwarder(kind: str, listen_at: str, target: str) -> Iterator[subprocess.Popen[bytes]]:
    """vsockctl or socat forwarding ``listen_at`` to ``target``, once it accepts."""
    if kind == "vsockctl":
        args = [sys.executable, "-m", "vsockctl", "-q", "forward", listen_at, target]
    else:
        args = [
            "socat",
            socat_address(listen_at, listening=True),
            socat_address(target, listening=False),
        ]
    proc = subprocess.Popen(args)
    try:
        for _ in range(1200):
            with contextlib.suppress(OSError), open_client(listen_at):
                break
            time.sleep(0.05)
        time.sleep(0.2)  # socat serves that probe in a child of its own
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def forwarders(kinds: list[str], listen_at: str, target: str) -> Iterator[Clients]:
    """The target itself ("direct") and each forwarder of ``kinds`` to it, all up at once,
    the n-th listening at ``listen_at.format(n)``."""
    with contextlib.ExitStack() as stack:
        clients: Clients = {"direct": (target, None)}
        for index, kind in enumerate(kinds):
            side = listen_at.format(index)
            clients[kind] = (side, stack.enter_context(forwarder(kind, side, target)).pid)
        yield clients


def in_rounds(
    clients: Clients, rounds: int, measure: Callable[[str, int | None], T]
) -> dict[str, list[T]]:
    """``measure`` each of ``clients`` in :func:`rounds.turns`."""
    figures: dict[str, list[T]] = {name: [] for name in clients}
    for name in turns(list(clients), rounds):
        figures[name].append(measure(*clients[name]))
    return figures


def send_all_of(side: str, size: int) -> float:
    """Send ``size`` bytes to ``side``, half-close, wait for the receiver's byte; Gbit/s."""
    block = memoryview(bytes(CHUNK))
    with open_client(side) as sock:
        started = time.perf_counter()
        left = size
        while left:
            n = min(left, CHUNK)
            sock.sendall(block[:n])
            left -= n
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b"k"
        return size * 8 / (time.perf_counter() - started) / 1e9


def concurrent(side: str) -> tuple[int, float]:
    payloads = [hashlib.sha256(bytes([i])).digest() * 32768 for i in range(100)]  # 1 MiB each

    def one(payload: bytes) -> bool:
        with open_client(side) as sock:
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


def idle_rss(proc: subprocess.Popen[bytes], side: str, count: int) -> float:
    clients = [open_client(side) for _ in range(count)]
    try:
        time.sleep(2)
        return rss_mib(proc.pid)
    finally:
        for client in clients:
            client.close()


def load_figures(kind: str, tcp_port: int) -> list[str]:
    """100 at once and idle RSS through ``kind``, each with a fresh forwarder."""
    lines = []
    vsock_port = TARGET_PORT + 10 + tcp_port % 100
    side = f"tcp:127.0.0.1:{tcp_port}"
    for serve in (echo_digest, hold):
        service = Target(vsock_port, serve)
        with forwarder(kind, side, f"vsock:1:{vsock_port}") as proc:
            if serve is echo_digest:
                exact, seconds = concurrent(side)
                lines.append(f"100 x 1 MiB at once: {exact} of 100 exact in {seconds:.1f} s")
            else:
                lines.append(f"RSS with 256 idle connections {idle_rss(proc, side, 256):.1f} MiB")
        service.close()
        vsock_port += 100
    return lines


def print_bulk(kinds: list[str], size: int, runs: int) -> None:
    """Bulk through each forwarder and direct, to a receiver with the kernel's default
    vsock buffer and to one with vsockctl recv's."""
    for index, (settings, whose) in enumerate(RECEIVER_BUFFERS):
        port = TARGET_PORT + 20 + index
        target = Target(port, discard, settings)
        with forwarders(kinds, f"tcp:127.0.0.1:182{index}{{}}", f"vsock:1:{port}") as clients:
            figures = in_rounds(clients, runs, lambda side, _: send_all_of(side, size))
        target.close()
        direct = statistics.median(figures["direct"])
        print(f"  bulk, one connection, to a receiver with {whose}:")
        print(f"    direct, no forwarder   {direct:6.2f} Gbit/s")
        for kind in kinds:
            figure = statistics.median(figures[kind])
            print(f"    {kind:<22} {figure:6.2f} Gbit/s ({figure / direct:.2f}x direct)")


def print_rates(kinds: list[str], via: str, args: argparse.Namespace) -> None:
    """Rates at each --at-once level, through each forwarder and direct."""
    levels = sorted({int(level) for level in args.at_once.split(",")})
    with tempfile.TemporaryDirectory() as tmp:
        if via == "unix":
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(f"{tmp}/target")
            listener.listen(1024)
            target, listen_at = f"unix:{tmp}/target", f"unix:{tmp}/forward{{}}"
        else:
            listener = listen(VsockAddress(VMADDR_CID_LOCAL, TARGET_PORT + 5), backlog=1024)
            target, listen_at = f"vsock:1:{TARGET_PORT + 5}", "tcp:127.0.0.1:1801{}"
        with pong(listener), forwarders(kinds, listen_at, target) as clients:
            figures = in_rounds(
                clients,
                args.rate_rounds,
                lambda side, pid: [rate(side, pid, args.rate_count, n) for n in levels],
            )
    for index, level in enumerate(levels):
        medians = {
            name: tuple(statistics.median(run[index][i] for run in runs) for i in (0, 1))
            for name, runs in figures.items()
        }
        direct = medians["direct"][0]
        apart = "" if FORWARDER_CPU != LOAD_CPU else " (one CPU: clients and forwarder share it)"
        print(f"  rate, {f'{level} at once' if level > 1 else 'one at a time'}{apart}:")
        print(f"    direct, no forwarder   {direct:7.1f} connections/s")
        for kind in kinds:
            figure, cpu = medians[kind]
            print(
                f"    {kind:<22} {figure:7.1f} connections/s ({figure / direct:.2f}x direct), "
                f"{cpu:.2f} ms of CPU each"
            )
        if "socat" in medians:
            ours, theirs = medians["vsockctl"], medians["socat"]
            print(
                f"    vsockctl / socat: {ours[0] / theirs[0]:.2f}x the rate, "
                f"{ours[1] / theirs[1]:.2f}x the CPU per connection"
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="256M", help="bytes per bulk run (default 256M)")
    parser.add_argument("--runs", type=int, default=5, help="bulk runs, median (default 5)")
    parser.add_argument("--rate-count", type=int, default=600, help="connections per rate run")
    parser.add_argument("--rate-rounds", type=int, default=3, help="rate runs, median (default 3)")
    parser.add_argument(
        "--at-once", default="1,16,128", help="rate: connections under way at once (1,16,128)"
    )
    parser.add_argument("--via", choices=("tcp", "unix"), default="tcp", help="see above")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    kinds = ["vsockctl"] + (["socat"] if shutil.which("socat") else [])
    if args.via == "unix":
        print("forward benchmark: Unix socket -> forwarder -> Unix socket, connection rate")
        print_rates(kinds, "unix", args)
        return 0
    print(
        f"forward benchmark: TCP 127.0.0.1 -> forwarder -> vsock CID 1, {args.size} x {args.runs}"
    )
    print_bulk(kinds, parse_size(args.size), args.runs)
    print_rates(kinds, "tcp", args)
    for index, kind in enumerate(kinds):
        print(f"  {kind:<9} " + "; ".join(load_figures(kind, 18100 + index)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
