"""Soak and leaks: long-running servers after many clients, and after minutes of them.

Runs where vsock carries data over CID 1 (inside the test VM):

    scripts/vmrun 'python benchmarks/soak.py'                  # 10 minutes of soak
    scripts/vmrun 'python benchmarks/soak.py --seconds 60 --connections 1000'

Two parts, each printing what it measured:

- connections: ``listen -k``, ``throughput server`` and ``forward`` (to a
  ``listen -k``) serve N connections one after another; their open file
  descriptors and resident memory after the first 10 and after all N.
- soak: a ``throughput server`` for SECONDS, one client looping short tests
  while another sends garbage; tests served, garbage refused, fds and RSS at
  the start and at the end, and tracebacks in its output (must be 0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import IO

from vsockctl.bench.client import ClientError, run_client
from vsockctl.bench.spec import TestSpec
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.constants import VMADDR_CID_LOCAL
from vsockctl.vsock.route import Route
from vsockctl.vsock.sockets import connect

VSOCKCTL = [sys.executable, "-m", "vsockctl"]
SHORT_TEST = TestSpec(seconds=None, nbytes=256 * 1024, interval=0)


def footprint(pid: int) -> tuple[int, float]:
    """Open fds and resident MiB of ``pid``."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return fds, rss / 1024


def start(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [*VSOCKCTL, "--json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # sockopt records (the default vsock buffer) come first
        record = json.loads(line)
        if record["event"] == "listening":
            return proc, int(record["port"])
        if record["event"] == "forwarding":  # listen: vsock:any:PORT
            return proc, int(record["listen"].rpartition(":")[2])
    raise RuntimeError(f"vsockctl {' '.join(args)} did not start")


class Drain:
    """Reads a server's stdout and stderr as they come (a full pipe would stop it),
    counting its --json events and the tracebacks in either stream."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.events: Counter[str] = Counter()
        self.tracebacks = 0
        assert proc.stdout is not None and proc.stderr is not None
        self.threads = [
            threading.Thread(target=self.read, args=(stream,), daemon=True)
            for stream in (proc.stdout, proc.stderr)
        ]
        for thread in self.threads:
            thread.start()

    def read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self.tracebacks += line.count(b"Traceback")
            if line.startswith(b"{"):
                self.events[json.loads(line)["event"]] += 1

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=60)


def stop(proc: subprocess.Popen[bytes], drain: Drain) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    drain.join()


def exchange(port: int, data: bytes) -> None:
    with connect(VsockAddress(VMADDR_CID_LOCAL, port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass


def connections(name: str, args: list[str], count: int, one: Callable[[int], None]) -> None:
    proc, port = start(*args)
    drain = Drain(proc)
    try:
        for done in range(1, count + 1):
            one(port)
            if done == 10:
                first = footprint(proc.pid)
        last = footprint(proc.pid)
    finally:
        stop(proc, drain)
    print(
        f"  {name:<18} after 10: {first[0]:3d} fds {first[1]:6.1f} MiB   "
        f"after {count}: {last[0]:3d} fds {last[1]:6.1f} MiB   "
        f"growth {last[0] - first[0]:+d} fds {last[1] - first[1]:+.1f} MiB"
    )


def short_test(port: int) -> None:
    run_client(Route(VsockAddress(VMADDR_CID_LOCAL, port)), SHORT_TEST)


def soak(seconds: float) -> int:
    proc, port = start("throughput", "server", "--port", "any")
    drain = Drain(proc)
    route = Route(VsockAddress(VMADDR_CID_LOCAL, port))
    deadline = time.monotonic() + seconds
    tally = {"tests": 0, "test_errors": 0, "garbage": 0}

    def tests() -> None:
        while time.monotonic() < deadline:
            try:
                run_client(route, SHORT_TEST)
                tally["tests"] += 1
            except (ClientError, OSError):
                tally["test_errors"] += 1

    def garbage() -> None:
        rng = random.Random(1)
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                exchange(port, rng.randbytes(rng.randint(1, 4096)))
            tally["garbage"] += 1

    time.sleep(0.5)
    start_fds, start_rss = footprint(proc.pid)
    workers = [threading.Thread(target=tests), threading.Thread(target=garbage)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    end_fds, end_rss = footprint(proc.pid)
    alive = proc.poll() is None
    stop(proc, drain)
    served, refused = drain.events["test_done"], drain.events["refused"]
    tracebacks = drain.tracebacks
    print(f"soak: throughput server for {seconds:.0f} s")
    ok, failed = tally["tests"], tally["test_errors"]
    print(f"  tests served:     {served} (the client saw {ok} complete, {failed} failed)")
    print(f"  garbage refused:  {refused} of {tally['garbage']} garbage connections")
    print(f"  fds:              {start_fds} at the start, {end_fds} at the end")
    print(f"  RSS:              {start_rss:.1f} MiB at the start, {end_rss:.1f} MiB at the end")
    print(f"  tracebacks:       {tracebacks}")
    print(f"  server alive at the end: {alive}; exit status after SIGTERM: {proc.returncode}")
    return 0 if alive and tracebacks == 0 and served == tally["tests"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600, help="soak length (default 600)")
    parser.add_argument("--connections", type=int, default=1000, help="per server (default 1000)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # lines as they come
    if args.connections:  # 0: the soak alone
        print(f"connections: {args.connections} one after another")
        payload = b"x" * 1000
        connections(
            "listen -k",
            ["listen", "--port", "any", "-k", "-o", "/dev/null"],
            args.connections,
            lambda port: exchange(port, payload),
        )
        connections(
            "throughput server",
            ["throughput", "server", "--port", "any"],
            args.connections // 2,  # each test is two connections: control and data
            short_test,
        )
        target, target_port = start("listen", "--port", "any", "-k", "-o", "/dev/null")
        target_drain = Drain(target)
        connections(
            "forward",
            ["forward", "vsock:any:any", f"vsock:1:{target_port}"],
            args.connections,
            lambda port: exchange(port, payload),
        )
        stop(target, target_drain)
    return soak(args.seconds)


if __name__ == "__main__":
    sys.exit(main())
