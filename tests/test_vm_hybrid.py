"""Hybrid vsock with one half real: FakeVmm relays between Unix sockets and real vsock on CID 1.

Also VMADDR_FLAG_TO_HOST reaching the kernel, seen through strace.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_vmm import FakeVmm, connect_or_none, forward_guest_to_host
from tests.peers import (
    LOCAL,
    free_port,
    process,
    recv_all,
    run_vsockctl,
    start_throughput_server,
    stop_process,
)
from tests.records import json_records
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.hybrid import listener_path
from vsockctl.vsock.sockets import accept, listen

pytestmark = [pytest.mark.vsock, pytest.mark.timeout(120)]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vsk", dir="/tmp") as name:
        yield Path(name)


def vsock_guest(port: int) -> socket.socket | None:
    """The guest side of the fake VMM: a real vsock connection on CID 1."""
    return connect_or_none(socket.AF_VSOCK, (LOCAL, port))


def test_send_through_the_vmm_to_a_vsock_receiver(short_dir: Path) -> None:
    data = os.urandom(8 << 20)
    src, out = short_dir / "src.bin", short_dir / "out.bin"
    src.write_bytes(data)
    port = str(free_port())
    with (
        process(
            [sys.executable, "-m", "vsockctl", "recv", "--port", port, str(out)],
            stderr=subprocess.PIPE,
        ) as receiver,
        FakeVmm(short_dir / "v.sock", vsock_guest),
    ):
        sent = run_vsockctl(
            "send",
            "--uds",
            str(short_dir / "v.sock"),
            "--port",
            port,
            str(src),
            "--retry",
            "100",
            "--retry-delay",
            "50ms",
        )
        _, err = receiver.communicate(timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert receiver.returncode == 0, err
    assert out.read_bytes() == data


def test_guest_connection_reaches_listen_uds(short_dir: Path) -> None:
    uds, host_port = short_dir / "v.sock", 7000
    with (
        process(
            [
                sys.executable,
                "-m",
                "vsockctl",
                "listen",
                "--uds",
                str(uds),
                "--port",
                str(host_port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as listener,
        listen(VsockAddress(LOCAL, 0xFFFFFFFF)) as guest_view,
    ):
        assert listener.stderr is not None
        assert b"listening on unix:" in listener.stderr.readline()
        forward_guest_to_host(guest_view, listener_path(str(uds), host_port))
        guest_port = guest_view.getsockname()[1]
        # The "guest" sends over real vsock; the fake VMM carries it to PATH_7000.
        sent = run_vsockctl("send", "--to", f"1:{guest_port}", input=b"hello from the guest")
        out, err = listener.communicate(timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert listener.returncode == 0, err
    assert out == b"hello from the guest"
    assert not Path(listener_path(str(uds), host_port)).exists()


def test_throughput_client_through_the_vmm(short_dir: Path) -> None:
    server, port = start_throughput_server("--port", "any", "--once")
    try:
        with FakeVmm(short_dir / "v.sock", vsock_guest):
            result = run_vsockctl(
                "--json",
                "throughput",
                "client",
                "--uds",
                str(short_dir / "v.sock"),
                "--port",
                str(port),
                "--bytes",
                "32M",
            )
        assert server.wait(timeout=30) == 0
    finally:
        stop_process(server)
    assert result.returncode == 0, result.stderr
    (direction,) = json_records(result.stdout)[-1]["directions"]
    assert direction["receiver"]["bytes"] == 32 << 20


def test_to_host_flag_reaches_the_kernel(short_dir: Path) -> None:
    trace = short_dir / "strace.out"
    with listen(VsockAddress(LOCAL, 0xFFFFFFFF)) as server:
        port = server.getsockname()[1]
        received: list[bytes] = []

        def serve() -> None:
            conn, _ = accept(server)
            with conn:
                received.append(recv_all(conn))

        thread = threading.Thread(target=serve)
        thread.start()
        result = subprocess.run(
            [
                "strace",
                "-f",
                "-e",
                "trace=connect",
                "-o",
                str(trace),
                sys.executable,
                "-m",
                "vsockctl",
                "send",
                "--to-host",
                "--to",
                f"1:{port}",
                "--size",
                "1K",
            ],
            capture_output=True,
            timeout=60,
        )
        thread.join(30)
    assert result.returncode == 0, result.stderr
    assert received == [bytes(1024)]  # the socket carried on as a normal socket
    calls = [line for line in trace.read_text().splitlines() if "AF_VSOCK" in line]
    assert calls, trace.read_text()
    assert all("svm_flags=VMADDR_FLAG_TO_HOST" in line for line in calls), calls
    assert all(f"svm_port={port}" in line or f"svm_port={port:#x}" in line for line in calls), calls
