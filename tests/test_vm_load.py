"""Under load, over real vsock (CID 1): a burst of 100 clients, 1,000 connections in a row.

A burst must find room in the accept queue (vsock resets a connection that
finds it full), and a long-running server must not grow with every client it
has served: its open file descriptors after 1,000 connections are those it
had after the first 10.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.peers import (
    LOCAL,
    connect_when_listening,
    free_port,
    keep_reading,
    pattern,
    process,
    read_until_listening,
    recv_all,
    start_throughput_server,
    stop_process,
)
from tests.records import json_records
from vsockctl.bench import spec as bench_spec
from vsockctl.bench.client import run_client
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.route import Route
from vsockctl.vsock.sockets import connect

pytestmark = [pytest.mark.vsock, pytest.mark.timeout(300)]

BURST = 100
PAYLOAD = 4096


def vsockctl_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "vsockctl", *args]


def payload(index: int) -> bytes:
    return pattern(PAYLOAD, seed=index + 1)


def burst(port: int, client: Callable[[socket.socket, int], bytes]) -> list[bytes]:
    """BURST clients connecting at the same moment; what each got back."""
    start = threading.Barrier(BURST)
    results: list[bytes | BaseException] = [b""] * BURST

    def run(index: int) -> None:
        try:
            start.wait()
            with connect(VsockAddress(LOCAL, port), timeout=30) as sock:
                results[index] = client(sock, index)
        except BaseException as exc:  # counted below
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(BURST)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], f"{len(failures)} of {BURST} clients failed, first: {failures[0]!r}"
    return [r for r in results if isinstance(r, bytes)]


def send_and_read(sock: socket.socket, index: int) -> bytes:
    sock.sendall(payload(index))
    sock.shutdown(socket.SHUT_WR)
    return recv_all(sock)


def test_a_burst_of_100_clients_is_served_in_relay_mode(tmp_path: Path) -> None:
    out = tmp_path / "burst.bin"
    port = free_port()
    args = ["--json", "listen", "--port", str(port), "-k", "--max-clients", str(BURST)]
    with process(
        vsockctl_args(*args, "-o", str(out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as server:
        read_until_listening(server.stdout)
        assert burst(port, send_and_read) == [b""] * BURST
        server.send_signal(signal.SIGTERM)
        events, _ = server.communicate(timeout=60)
    closed = json_records(events)
    closed = [r for r in closed if r["event"] == "closed"]
    assert [r["received_bytes"] for r in closed] == [PAYLOAD] * BURST
    data = out.read_bytes()
    assert len(data) == BURST * PAYLOAD
    for index in range(BURST):  # each client's bytes arrived whole and in order
        assert payload(index) in data


def test_a_burst_of_100_clients_is_served_with_exec() -> None:
    port = free_port()
    args = ["listen", "--port", str(port), "-k", "--max-clients", str(BURST), "--exec", "cat"]
    with process(vsockctl_args(*args)):
        with connect_when_listening(VsockAddress(LOCAL, port)) as first:
            assert send_and_read(first, 0) == payload(0)
        echoed = burst(port, send_and_read)
    assert echoed == [payload(i) for i in range(BURST)]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fds_after(pid: int, counts: tuple[int, ...], one: Callable[[], None]) -> list[int]:
    """Serve ``one`` connection after another; the server's fd count at each of ``counts``."""
    seen = []
    for done in range(1, max(counts) + 1):
        one()
        if done in counts:
            seen.append(open_fds(pid))
    return seen


def test_listen_k_keeps_its_fds_over_1000_connections() -> None:
    port = free_port()
    with process(
        vsockctl_args("--json", "listen", "--port", str(port), "-k", "-o", "/dev/null"),
        stdout=subprocess.PIPE,
    ) as server:
        read_until_listening(server.stdout)
        keep_reading(server.stdout)  # an accepted and a closed record per connection

        def one() -> None:
            with connect(VsockAddress(LOCAL, port), timeout=10) as sock:
                sock.sendall(b"x" * 100)
                sock.shutdown(socket.SHUT_WR)
                recv_all(sock)

        after_10, after_1000 = fds_after(server.pid, (10, 1000), one)
        assert after_1000 == after_10
        assert server.poll() is None


def test_throughput_server_keeps_its_fds_over_1000_connections() -> None:
    """1,000 connections: every 20th pair a real test (control and data), the rest
    clients that send garbage and are refused (under emulation a real test takes
    a good part of a second; the soak benchmark runs thousands of them)."""
    server, port = start_throughput_server()
    keep_reading(server.stdout)  # records per test and per refused client
    spec = bench_spec.TestSpec(seconds=None, nbytes=1024, buf_size=1024, interval=0)
    garbage = pattern(64)
    served = 0
    try:

        def one() -> None:
            nonlocal served
            served += 1
            if served % 20 == 0:  # a real test: two connections
                summary = run_client(Route(VsockAddress(LOCAL, port)), spec)
                receiver = summary["directions"][0]["receiver"]
                assert receiver is not None and receiver["bytes"] == 1024
                return
            with connect(VsockAddress(LOCAL, port), timeout=10) as sock:
                sock.sendall(garbage)
                recv_all(sock)

        after_10, after_950 = fds_after(server.pid, (10, 950), one)  # 900 + 2 * 50
        assert after_950 == after_10
        assert server.poll() is None
    finally:
        stop_process(server)
