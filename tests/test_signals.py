"""SIGTERM and SIGHUP end a command as Ctrl-C does, on the host tier over Unix sockets.

Each long-running command is started directly (its own PID, not a shell's)
and stopped with a signal; the test checks what a service manager relies on:
the exit status (143 or 129), data already received flushed, the partial
stats, and no socket file left behind. Hybrid vsock (``--uds``) lets all of it
run over Unix sockets here; the VM tier repeats the transfer cases over vsock.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_vmm import FakeVmm, unix_guest
from tests.peers import pattern, process, recv_all, try_unix
from tests.records import json_records
from vsockctl.exit_status import ExitStatus, exit_status_for
from vsockctl.signals import Terminated, stop_signals_raise

pytestmark = pytest.mark.timeout(60)

STOPS = [
    pytest.param(signal.SIGTERM, ExitStatus.TERMINATED, id="SIGTERM"),
    pytest.param(signal.SIGHUP, ExitStatus.HANGUP, id="SIGHUP"),
]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: Unix socket paths are limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="vsk", dir="/tmp") as name:
        yield Path(name)


def vsockctl_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "vsockctl", *args]


def wait_for(condition: object, what: str, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if callable(condition) and condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def connect_unix(path: Path) -> socket.socket:
    end = time.monotonic() + 20
    while (sock := try_unix(path)) is None:
        if time.monotonic() > end:
            raise TimeoutError(f"nothing accepts on {path}")
        time.sleep(0.02)
    return sock


def unread(sock: socket.socket) -> int:
    """Bytes this Unix socket sent that its peer has not read yet."""
    out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    return int.from_bytes(out, sys.byteorder)


def test_signal_becomes_terminated_and_the_old_handler_returns() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as caught, stop_signals_raise():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
    assert caught.value.signum == signal.SIGTERM
    assert isinstance(caught.value, KeyboardInterrupt)  # every Ctrl-C path applies
    assert int(exit_status_for(caught.value)) == 143
    assert int(exit_status_for(Terminated(signal.SIGHUP))) == 129
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize(("signum", "status"), STOPS)
def test_recv_flushes_reports_and_exits_with_the_signal(
    short_dir: Path, tmp_path: Path, signum: int, status: ExitStatus
) -> None:
    data = pattern(300_001)
    out = tmp_path / "stdout.bin"
    uds = short_dir / "v.sock"
    with (
        out.open("wb") as stdout,
        process(
            vsockctl_cmd("recv", "--uds", str(uds), "--port", "7000"),
            stdout=stdout,  # data to stdout: buffered, so the flush at the end matters
            stderr=subprocess.PIPE,
        ) as receiver,
        connect_unix(Path(f"{uds}_7000")) as sender,
    ):
        sender.sendall(data)
        wait_for(lambda: unread(sender) == 0, "the receiver to read everything")
        receiver.send_signal(signum)
        _, err = receiver.communicate(timeout=20)
    lines = err.decode().splitlines()
    assert receiver.returncode == status, lines
    assert lines[-2].startswith("partial: received 293.0 KiB (300001 bytes)"), lines
    assert lines[-1] == f"vsockctl: terminated by {signal.Signals(signum).name}"
    assert out.read_bytes() == data
    assert not Path(f"{uds}_7000").exists()


@pytest.mark.parametrize(("signum", "status"), STOPS)
def test_listen_removes_its_socket_file(short_dir: Path, signum: int, status: ExitStatus) -> None:
    uds = short_dir / "v.sock"
    path = Path(f"{uds}_7001")
    with process(
        vsockctl_cmd("--json", "listen", "--uds", str(uds), "--port", "7001"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as listener:
        assert listener.stderr is not None  # stdout carries data: the events go to stderr
        assert json.loads(listener.stderr.readline())["event"] == "listening"
        assert path.exists()
        listener.send_signal(signum)
        _, err = listener.communicate(timeout=20)
    assert listener.returncode == status, err
    assert not path.exists()
    lines = err.decode().splitlines()
    assert lines[0] == f"vsockctl: terminated by {signal.Signals(signum).name}"
    assert json.loads(lines[-1])["exit_status"] == status


def test_listen_k_reports_each_open_connection_on_sigterm(short_dir: Path, tmp_path: Path) -> None:
    uds = short_dir / "v.sock"
    out = tmp_path / "clients.bin"
    with (
        out.open("wb") as stdout,
        process(
            vsockctl_cmd(
                "--json", "listen", "--uds", str(uds), "--port", "7002", "--max-clients", "4"
            ),
            stdout=stdout,
            stderr=subprocess.PIPE,
        ) as listener,
    ):
        clients = [connect_unix(Path(f"{uds}_7002")) for _ in range(2)]
        for index, client in enumerate(clients):
            client.sendall(bytes([65 + index]) * 5000)
        wait_for(lambda: all(unread(c) == 0 for c in clients), "the clients' bytes to be read")
        listener.send_signal(signal.SIGTERM)
        _, err = listener.communicate(timeout=20)
        for client in clients:
            assert recv_all(client) == b""  # the server closed it
            client.close()
    assert listener.returncode == ExitStatus.TERMINATED, err
    records = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    closed = [r for r in records if r["event"] == "closed"]
    assert sorted(r["received_bytes"] for r in closed) == [5000, 5000]
    assert sorted(out.read_bytes()) == sorted(b"A" * 5000 + b"B" * 5000)
    assert not Path(f"{uds}_7002").exists()


def test_throughput_server_on_sigterm(short_dir: Path) -> None:
    uds = short_dir / "v.sock"
    with process(
        vsockctl_cmd("--json", "throughput", "server", "--uds", str(uds)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as server:
        assert server.stdout is not None
        assert json.loads(server.stdout.readline())["event"] == "listening"
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=20)
    assert server.returncode == ExitStatus.TERMINATED, err
    assert list(short_dir.iterdir()) == []


def test_send_reports_what_it_sent_on_sigterm(short_dir: Path) -> None:
    guest = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    guest.bind(str(short_dir / "guest_7003"))
    guest.listen(1)
    with (
        guest,
        FakeVmm(short_dir / "v.sock", unix_guest(short_dir)),
        process(
            vsockctl_cmd(
                "--json",
                "send",
                "--uds",
                str(short_dir / "v.sock"),
                "--port",
                "7003",
                "--size",
                "100G",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as sender,
    ):
        conn, _ = guest.accept()
        with conn:
            got = 0
            # 3 MiB: two 1 MiB sends have returned (a signal can land between the
            # kernel taking the last one and the stats counting it)
            while got < 3 << 20:
                got += len(conn.recv(1 << 16))
            sender.send_signal(signal.SIGTERM)
            out, err = sender.communicate(timeout=20)
    assert sender.returncode == ExitStatus.TERMINATED, err
    records = json_records(out)
    stats = next(r for r in records if r["event"] == "stats")
    assert stats["complete"] is False and stats["sent_bytes"] >= 1 << 20
    assert records[-1]["event"] == "error" and records[-1]["error"] == "terminated by SIGTERM"
