"""Running as a service, on the host tier: socket activation through systemd's own
systemd-socket-activate (TCP and Unix sockets; vsock ones in the VM tier), the
notifications a manager receives, /metrics checked against a known run, and
wait-ready through a hybrid socket path."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers import keep_reading, run_vsockctl, stop_process, vsockctl
from tests.records import json_records, metric_families
from tests.service_peers import ManagerSocket, free_tcp_port, socket_activated
from vsockctl.exit_status import ExitStatus
from vsockctl.systemd.activation import ActivationError, listen_fds
from vsockctl.systemd.notify import Notifier


@pytest.fixture
def echo(tmp_path: Path) -> Iterator[Path]:
    """A Unix echo service: each client gets back what it sent, then the end."""
    path = tmp_path / "echo.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(64)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield path
    server.close()


def round_trip(port: int, data: bytes, deadline: float = 30) -> bytes:
    """Send ``data`` to 127.0.0.1:port, end it, and read the answer to its end."""
    until = time.monotonic() + deadline
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            break
        except ConnectionRefusedError:
            assert time.monotonic() < until, f"nothing listens on {port}"
            time.sleep(0.1)
    with sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := sock.recv(65536):
            got += chunk
    return bytes(got)


def test_forward_serves_the_socket_systemd_passes_and_says_so(tmp_path: Path, echo: Path) -> None:
    manager = ManagerSocket(tmp_path / "notify")
    port = free_tcp_port()
    env = {"NOTIFY_SOCKET": str(manager.path), "WATCHDOG_USEC": "400000"}
    with socket_activated(f"127.0.0.1:{port}", "forward", f"unix:{echo}", env=env) as proc:
        assert round_trip(port, b"x" * 100_000) == b"x" * 100_000
        ready = manager.until(lambda m: "READY" in m)
        assert ready["READY"] == "1" and "forwarded" in ready["STATUS"], ready
        # the watchdog's pings come every half period, with the counts when they change
        ping = manager.until(lambda m: "0 open, 1 forwarded" in m.get("STATUS", ""))
        assert ping["WATCHDOG"] == "1", ping
        assert sum("WATCHDOG" in m for m in manager.messages) >= 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == ExitStatus.TERMINATED
        assert manager.until(lambda m: "STOPPING" in m)["STOPPING"] == "1"
    manager.close()


def test_a_listen_address_that_is_not_the_passed_socket(tmp_path: Path, echo: Path) -> None:
    port = free_tcp_port()
    with socket_activated(
        f"127.0.0.1:{port}", "forward", "tcp:127.0.0.1:1", f"unix:{echo}"
    ) as proc:
        with contextlib.suppress(OSError):
            round_trip(port, b"")  # the first client starts it
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == ExitStatus.USAGE, err
    assert f"systemd passed a socket on tcp:127.0.0.1:{port}" in err.decode()
    assert "asks for tcp:127.0.0.1:1" in err.decode() and b"Traceback" not in err


def test_forward_alone_without_systemd_needs_both_sides(echo: Path) -> None:
    done = run_vsockctl("forward", f"unix:{echo}")
    assert done.returncode == ExitStatus.USAGE
    assert b"LISTEN may be left out when systemd passes the socket" in done.stderr


def _forward(*args: str) -> tuple[Any, int, str]:
    """forward --json --metrics on a free port: the process, its port, the metrics URL."""
    proc = vsockctl("--json", "forward", "--metrics", "tcp:127.0.0.1:0", *args,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    records: dict[str, dict[str, Any]] = {}
    while "forwarding" not in records:
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        record = json.loads(line)
        records[record["event"]] = record
    keep_reading(proc.stdout)
    port = int(records["forwarding"]["listen"].rpartition(":")[2])
    return proc, port, records["metrics"]["url"]


def scrape(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return metric_families(answer.read())


def sample(families: dict[str, Any], name: str, **labels: str) -> float:
    """The value of the sample ``name`` with ``labels``, in whichever family holds it."""
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise KeyError((name, labels))


def scrape_until(url: str, name: str, value: float, **labels: str) -> dict[str, Any]:
    """Scrape until ``name`` reaches ``value`` (a connection is counted as it ends)."""
    deadline = time.monotonic() + 30
    while True:
        families = scrape(url)
        with contextlib.suppress(KeyError):
            if sample(families, name, **labels) >= value or time.monotonic() > deadline:
                return families
        assert time.monotonic() < deadline, (name, labels)
        time.sleep(0.1)


def test_forward_metrics_add_up_to_a_known_run(tmp_path: Path, echo: Path) -> None:
    proc, port, url = _forward("tcp:127.0.0.1:0", f"unix:{echo}")
    try:
        sizes = [1000 * (i + 1) for i in range(5)]
        for size in sizes:
            assert round_trip(port, b"y" * size) == b"y" * size
        deadline = time.monotonic() + 30
        while sample(families := scrape(url), "vsockctl_forward_connections_open") != 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        stop_process(proc)
    assert sample(families, "vsockctl_forward_connections_total") == 5
    assert sample(families, "vsockctl_forward_bytes_total", direction="from_client") == sum(sizes)
    assert sample(families, "vsockctl_forward_bytes_total", direction="to_client") == sum(sizes)
    assert sample(families, "vsockctl_forward_connection_duration_seconds_count") == 5
    assert sample(families, "vsockctl_forward_connections_refused_total", reason="not_allowed") == 0
    assert sample(families, "vsockctl_build_info")  # with its version label


def test_forward_metrics_count_failures_and_refusals_by_reason(tmp_path: Path) -> None:
    missing = tmp_path / "nobody.sock"
    proc, port, url = _forward("--allow", "10.0.0.0/8", "tcp:127.0.0.1:0", f"unix:{missing}")
    try:
        with contextlib.suppress(OSError):  # not in 10.0.0.0/8: closed at once (reset)
            round_trip(port, b"")
        refused = scrape_until(url, "vsockctl_forward_connections_refused_total", 1,
                               reason="not_allowed")  # fmt: skip
    finally:
        stop_process(proc)
    assert sample(refused, "vsockctl_forward_connections_refused_total", reason="not_allowed") == 1
    proc, port, url = _forward("tcp:127.0.0.1:0", f"unix:{missing}")
    try:
        for _ in range(2):
            with contextlib.suppress(OSError):  # its target is not there: closed (reset)
                round_trip(port, b"z")
        failed = scrape_until(url, "vsockctl_forward_connections_failed_total", 2,
                              reason="ENOENT")  # fmt: skip
    finally:
        stop_process(proc)
    assert sample(failed, "vsockctl_forward_connections_failed_total", reason="ENOENT") == 2
    assert sample(failed, "vsockctl_forward_connections_total") == 0


def test_a_bad_metrics_address_is_a_usage_error(echo: Path) -> None:
    done = run_vsockctl("forward", "--metrics", "127.0.0.1:9100", "tcp:127.0.0.1:0", f"unix:{echo}")
    assert done.returncode == ExitStatus.USAGE
    assert b"is not tcp:HOST:PORT" in done.stderr


def test_the_notifier_reaches_an_abstract_socket_and_pings_only_its_own_watchdog() -> None:
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"vsockctl-test-{os.getpid()}"
    manager.bind("\0" + name)
    manager.settimeout(10)
    with manager:
        env = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
        notifier = Notifier(env)
        assert env == {} and notifier.watchdog_usec == 0  # pid 1's watchdog, not ours
        notifier.ready(lambda: "fine")
        assert manager.recv(4096) == b"READY=1\nSTATUS=fine\n"
        notifier.stopping()
        assert manager.recv(4096) == b"STOPPING=1\nSTATUS=stopping\n"
        ours = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "200000"})
        ours.ready(lambda: "fine")
        messages = [manager.recv(4096) for _ in range(3)]
        ours.stopping()
    # pings every 0.1 s; the status went with READY and has not changed since
    assert messages[0] == b"READY=1\nSTATUS=fine\n" and messages[1:] == [b"WATCHDOG=1\n"] * 2


def test_sockets_meant_for_another_process_are_left_alone() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x"}
    assert listen_fds(env) == [] and env == {}
    with pytest.raises(ActivationError, match="not numbers"):
        listen_fds({"LISTEN_PID": "me", "LISTEN_FDS": "1"})


def test_wait_ready_through_a_hybrid_socket_path(tmp_path: Path) -> None:
    """What a hybrid VMM delivers: the guest's stream to CID 2 PORT on PATH_PORT (the
    real mux carries it in the hybrid stage)."""
    mux = tmp_path / "v.sock"
    proc = vsockctl("--json", "wait-ready", "--uds", str(mux), "--port", "5000",
                    "--timeout", "60s", stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    assert first == {**first, "event": "waiting_ready", "socket_types": ["stream"], "port": 5000}
    for message in (b"STATUS=Starting\nX_SYSTEMD_UNIT_ACTIVE=basic.target\n", b"READY=1\n"):
        with socket.socket(socket.AF_UNIX) as guest:
            guest.connect(f"{mux}_5000")
            guest.sendall(message)
            guest.shutdown(socket.SHUT_WR)
            assert guest.recv(1) == b""  # closed once read, as sd_notify waits for
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    notes = json_records(out, "notification")
    assert [n["fields"] for n in notes] == [
        {"STATUS": "Starting", "X_SYSTEMD_UNIT_ACTIVE": "basic.target"},
        {"READY": "1"},
    ]
    assert [n["ready"] for n in notes] == [False, True]
    assert not (tmp_path / "v.sock_5000").exists()  # its socket file went with it


def test_wait_ready_times_out_with_5(tmp_path: Path) -> None:
    done = run_vsockctl("wait-ready", "--uds", str(tmp_path / "v.sock"), "--port", "5001",
                        "--timeout", "1s")  # fmt: skip
    assert done.returncode == ExitStatus.TIMED_OUT
    assert done.stderr.decode().splitlines()[-1] == (
        f"vsockctl: no READY=1 within 1 s on {tmp_path}/v.sock_5001"
    )


def test_vms_openmetrics_is_not_json() -> None:
    done = run_vsockctl("--json", "vms", "--format", "openmetrics")
    assert done.returncode == ExitStatus.USAGE
