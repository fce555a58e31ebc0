"""Hybrid vsock on the host tier: vsockctl against FakeVmm, every byte over Unix sockets."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Invoke
from tests.fake_vmm import FakeVmm, Mode, connect_or_none, unix_guest
from tests.peers import (
    process,
    recv_all,
    run_vsockctl,
    start_throughput_server,
    stop_process,
)
from tests.records import json_record, json_records
from vsockctl.errors import ProtocolError, VsockError, VsockUnavailableError
from vsockctl.exit_status import ExitStatus, exit_status_for
from vsockctl.vsock.hybrid import check_uds, connect_hybrid, hybrid_listener, listener_path

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: Unix socket paths are limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="vsk", dir="/tmp") as name:
        yield Path(name)


class GuestListener:
    """A 'guest' service on port P: the Unix socket guest_P, serving one connection."""

    def __init__(self, directory: Path, port: int, reply: bytes = b"") -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(directory / f"guest_{port}"))
        self.sock.listen(4)
        self.received = b""
        self.reply = reply
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            if self.reply:
                conn.sendall(self.reply)
            self.received = recv_all(conn)

    def close(self) -> None:
        self.thread.join(30)
        self.sock.close()


def test_handshake_then_the_stream_both_ways(short_dir: Path) -> None:
    guest = GuestListener(short_dir, 52, reply=b"first from the guest")
    with FakeVmm(short_dir / "v.sock", unix_guest(short_dir)) as vmm:
        sock = connect_hybrid(str(short_dir / "v.sock"), 52, timeout=5)
        with sock:
            # Bytes the guest sends right after OK are not lost to the handshake.
            assert sock.recv(100) == b"first from the guest"
            sock.sendall(b"to the guest")
            sock.shutdown(socket.SHUT_WR)
        guest.close()
    assert vmm.requests == [b"CONNECT 52\n"]
    assert guest.received == b"to the guest"


@pytest.mark.parametrize(
    ("mode", "error", "status", "fragment"),
    [
        (Mode.CLOSE, VsockError, ExitStatus.CONNECTION_REFUSED, "closed without OK"),
        (
            Mode.GARBAGE,
            ProtocolError,
            ExitStatus.PROTOCOL_ERROR,
            ": 'HELLO THERE' (expected",
        ),  # text, not b'...'
        (Mode.OVERLONG, ProtocolError, ExitStatus.PROTOCOL_ERROR, "over 64 bytes"),
        (Mode.PARTIAL, ProtocolError, ExitStatus.PROTOCOL_ERROR, "middle of its reply"),
        (Mode.SILENT, VsockError, ExitStatus.TIMED_OUT, "no reply to CONNECT"),
    ],
)
def test_vmm_failures_are_named(
    short_dir: Path, mode: Mode, error: type[Exception], status: ExitStatus, fragment: str
) -> None:
    with (
        FakeVmm(short_dir / "v.sock", unix_guest(short_dir), mode=mode),
        pytest.raises(error) as info,
    ):
        connect_hybrid(str(short_dir / "v.sock"), 52, timeout=0.5)
    assert exit_status_for(info.value) == status
    assert fragment in str(info.value) or fragment in (getattr(info.value, "strerror", "") or "")


def test_nothing_listening_in_the_guest_is_a_reset(short_dir: Path) -> None:
    with (
        FakeVmm(short_dir / "v.sock", unix_guest(short_dir)),
        pytest.raises(VsockError) as info,
    ):
        connect_hybrid(str(short_dir / "v.sock"), 9999, timeout=2)
    assert info.value.errno == errno.ECONNRESET


def test_no_socket_file_is_unavailable(short_dir: Path) -> None:
    with pytest.raises(VsockUnavailableError, match="no hybrid vsock socket"):
        connect_hybrid(str(short_dir / "missing.sock"), 52)


def test_a_path_no_vmm_serves_is_unavailable_not_refused(short_dir: Path, invoke: Invoke) -> None:
    """A regular file, or a socket file nobody accepts on: no VMM there (exit 3, as
    ``info --uds`` says), not a guest port refusing (exit 4)."""
    plain = short_dir / "plain"
    plain.write_text("x")
    with pytest.raises(VsockUnavailableError, match="is not a Unix socket"):
        connect_hybrid(str(plain), 52)
    dead = short_dir / "dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(dead))  # bound, never listening: what a VMM that died leaves
    with pytest.raises(VsockUnavailableError, match="nothing accepts"):
        connect_hybrid(str(dead), 52)
    for path in (plain, dead):
        result = invoke(["connect", "--uds", str(path), "52"], input=b"")
        assert result.exit_code == ExitStatus.VSOCK_UNAVAILABLE, result.stderr
        assert result.stderr.count("\n") == 1


def test_cli_send_through_the_vmm_is_byte_exact(short_dir: Path, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    guest = GuestListener(short_dir, 5000)
    with FakeVmm(short_dir / "v.sock", unix_guest(short_dir)):
        result = run_vsockctl(
            "send", "--uds", str(short_dir / "v.sock"), "--port", "5000", str(src), "--sha256"
        )
        guest.close()
    assert result.returncode == 0, result.stderr
    assert guest.received == data
    assert hashlib.sha256(data).hexdigest().encode() in result.stderr


@pytest.mark.parametrize(
    ("mode", "status"),
    [
        (Mode.CLOSE, ExitStatus.CONNECTION_REFUSED),
        (Mode.GARBAGE, ExitStatus.PROTOCOL_ERROR),
        (Mode.SILENT, ExitStatus.TIMED_OUT),
    ],
)
def test_cli_connect_failures_are_one_line(short_dir: Path, mode: Mode, status: ExitStatus) -> None:
    with FakeVmm(short_dir / "v.sock", unix_guest(short_dir), mode=mode):
        result = run_vsockctl(
            "connect",
            "--uds",
            str(short_dir / "v.sock"),
            "5000",
            "--timeout",
            "500ms",
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode == status, result.stderr
    assert result.stderr.count(b"\n") == 1 and b"Traceback" not in result.stderr


def test_cli_probe_through_the_vmm(short_dir: Path) -> None:
    guest = GuestListener(short_dir, 5001)
    with FakeVmm(short_dir / "v.sock", unix_guest(short_dir)):
        result = run_vsockctl(
            "--json", "connect", "-z", "--uds", str(short_dir / "v.sock"), "5000-5001"
        )
    guest.close()
    records = json_records(result.stdout)
    assert [(r["port"], r["open"]) for r in records] == [(5000, False), (5001, True)]
    assert records[0]["errno_name"] == "ECONNRESET"
    assert records[1]["address"] == f"unix:{short_dir / 'v.sock'} port 5001"
    assert result.returncode == ExitStatus.CONNECTION_REFUSED


def test_cli_listen_takes_guest_connections_and_removes_its_socket(short_dir: Path) -> None:
    uds = short_dir / "v.sock"
    path = Path(listener_path(str(uds), 6000))
    with process(
        [*vsockctl_cmd(), "listen", "--uds", str(uds), "--port", "6000"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as listener:
        assert listener.stderr is not None
        first = listener.stderr.readline()
        assert b"listening on unix:" in first, first
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as guest:
            guest.connect(str(path))  # what the VMM does for a guest's connect to CID 2:6000
            guest.sendall(b"from the guest")
            guest.shutdown(socket.SHUT_WR)
        out, err = listener.communicate(timeout=30)
    assert listener.returncode == 0, err
    assert out == b"from the guest"
    assert not path.exists()


def vsockctl_cmd() -> list[str]:
    return [sys.executable, "-m", "vsockctl"]


def test_listener_refuses_a_file_that_is_not_a_socket(short_dir: Path, invoke: Invoke) -> None:
    uds = short_dir / "v.sock"
    Path(listener_path(str(uds), 6001)).write_text("precious")
    result = invoke(["listen", "--uds", str(uds), "--port", "6001"])
    assert result.exit_code == ExitStatus.ERROR
    assert "exists and is not a socket; not replacing it" in result.stderr
    assert Path(listener_path(str(uds), 6001)).read_text() == "precious"


def test_listener_replaces_a_stale_socket_but_not_a_live_one(short_dir: Path) -> None:
    uds = str(short_dir / "v.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(listener_path(uds, 6002))
    stale.close()  # the file stays; nobody accepts on it
    with hybrid_listener(uds, 6002) as sock:
        assert sock.getsockname() == listener_path(uds, 6002)
        with pytest.raises(VsockError) as info, hybrid_listener(uds, 6002):
            pass
        assert info.value.errno == errno.EADDRINUSE
    assert not os.path.exists(listener_path(uds, 6002))


def test_hybrid_listener_needs_a_port_number(invoke: Invoke, short_dir: Path) -> None:
    result = invoke(["recv", "--uds", str(short_dir / "v.sock"), "--port", "any"])
    assert result.exit_code == ExitStatus.USAGE
    assert "give a port number" in result.stderr


def test_info_uds_tells_live_from_dead(short_dir: Path, invoke: Invoke) -> None:
    uds = short_dir / "v.sock"
    assert invoke(["info", "--uds", str(uds)]).exit_code == ExitStatus.VSOCK_UNAVAILABLE
    guest = GuestListener(short_dir, 52)
    with FakeVmm(uds, unix_guest(short_dir)):
        live = invoke(["info", "--uds", str(uds), "--port", "52"])
        assert live.exit_code == 0, live.output
        assert "is a live Unix socket" in live.stdout and "CONNECT 52: OK" in live.stdout
        closed = invoke(["--json", "info", "--uds", str(uds), "--port", "53"])
        assert closed.exit_code == ExitStatus.CONNECTION_REFUSED
        record = json_record(closed.stdout)
        assert record["accepting"] is True and record["port"]["open"] is False
    guest.close()
    assert check_uds(str(uds)).accepting is False


@pytest.mark.parametrize("retry", [[], ["--retry", "3"]], ids=["", "retry"])
def test_throughput_over_hybrid_vsock_both_halves(short_dir: Path, retry: list[str]) -> None:
    """Client --uds -> FakeVmm -> (guest side) -> server --uds listening on PATH_PORT.

    The fake's guest side connects to the server's PATH_PORT sockets, so both
    the host-initiated (CONNECT) and guest-initiated (PATH_PORT) halves run.
    With --retry, the connection that finds the server carries the test: a
    --once server has only the one.
    """
    server_uds = short_dir / "srv"

    def to_server(port: int) -> socket.socket | None:
        return connect_or_none(socket.AF_UNIX, listener_path(str(server_uds), port))

    server, _ = start_throughput_server("--uds", str(server_uds), "--port", "5201", "--once")
    try:
        with FakeVmm(short_dir / "v.sock", to_server):
            result = run_vsockctl(
                "--json",
                "throughput",
                "client",
                "--uds",
                str(short_dir / "v.sock"),
                "--bytes",
                "16M",
                "-P",
                "2",
                "--vsock-buffer-size",
                "default",
                *retry,
            )
        assert server.wait(timeout=30) == 0
    finally:
        stop_process(server)
    assert result.returncode == 0, result.stderr
    summary = json_records(result.stdout)[-1]
    (direction,) = summary["directions"]
    assert direction["receiver"]["bytes"] == direction["sender"]["bytes"] == 16 << 20
    assert not list(short_dir.glob("srv_*"))  # every PATH_PORT removed
