"""throughput/bench over real vsock (CID 1): byte counts, intervals, JSON keys, robustness.

One server serves the whole module, one test after another, which is itself
under test: garbage, a wrong version and an interrupted client must not stop it.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.peers import (
    LOCAL,
    run_vsockctl,
    start_throughput_server,
    stop_process,
    vsockctl,
)
from tests.records import json_records
from vsockctl.bench import protocol
from vsockctl.events.catalog import validate
from vsockctl.exit_status import ExitStatus

pytestmark = [pytest.mark.vsock, pytest.mark.timeout(120)]

Record = dict[str, Any]


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    proc, port = start_throughput_server()
    yield port
    assert proc.poll() is None, "the server died during the module"
    stop_process(proc)


def run_client(port: int, *args: str) -> tuple[subprocess.CompletedProcess[bytes], list[Record]]:
    result = run_vsockctl("--json", "throughput", "client", f"1:{port}", *args)
    records = json_records(result.stdout)
    return result, records


def summary_of(records: list[Record]) -> Record:
    (summary,) = [r for r in records if r["event"] == "summary"]
    assert validate(summary) == []
    return summary


def interval_sum(intervals: list[Record], direction: str) -> int:
    return sum(i[direction]["bytes"] for i in intervals)


COMBINATIONS = [
    ["--time", "1s"],
    ["--time", "1s", "-P", "3"],
    ["--time", "1s", "-R"],
    ["--time", "1s", "--bidir", "-P", "2"],
    ["--time", "1s", "--type", "seqpacket", "--buf-size", "64K"],
    ["--time", "1s", "--type", "seqpacket", "-R"],
    ["--bytes", "48M", "-P", "2", "--interval", "250ms"],
    ["--time", "1s", "--rcvlowat", "64K", "--buf-size", "128K"],
    ["--time", "1s", "--vsock-buffer-size", "default", "--interval", "0"],
    ["--time", "1s", "--sockopt", "sndbuf=64K"],
]


@pytest.mark.parametrize("args", COMBINATIONS, ids=[" ".join(a) for a in COMBINATIONS])
def test_both_ends_count_the_same_bytes(server: int, args: list[str]) -> None:
    result, records = run_client(server, *args)
    assert result.returncode == 0, result.stderr
    summary = summary_of(records)
    assert summary["complete"] and summary["errors"] == []
    for record in records:
        if record["event"] == "interval":
            assert validate(record) == []
    for direction in summary["directions"]:
        sender, receiver = direction["sender"], direction["receiver"]
        assert sender["bytes"] == receiver["bytes"] > 0
        assert receiver["bits_per_second"] > 0
        if "-P" in args:
            assert len(receiver["streams"]) == int(args[args.index("-P") + 1])
    client_sent = sum(
        d["sender"]["bytes"] for d in summary["directions"] if d["direction"][0] == "c"
    )
    client_received = sum(
        d["receiver"]["bytes"] for d in summary["directions"] if d["direction"][0] == "s"
    )
    if "--interval" in args and args[args.index("--interval") + 1] == "0":
        assert summary["intervals"] == []
    else:
        assert interval_sum(summary["intervals"], "sent") == client_sent
        assert interval_sum(summary["intervals"], "received") == client_received
        server_intervals = summary["server_intervals"]
        assert interval_sum(server_intervals, "received") == client_sent
        assert interval_sum(server_intervals, "sent") == client_received
    if "--bytes" in args:
        assert client_sent == 48 << 20
    buffers = summary["buffers"]
    expected = 262144 if "default" in args else 1 << 20
    assert buffers["client"]["buffer-size"] == buffers["server"]["buffer-size"] == expected
    if "--rcvlowat" in args:
        assert buffers["server"]["rcvlowat"] == 65536


def test_latency_mode_reports_percentiles(server: int) -> None:
    result, records = run_client(server, "--latency", "--time", "1s", "--msg-size", "64")
    assert result.returncode == 0, result.stderr
    latency = summary_of(records)["latency"]
    assert latency["round_trips"] > 10 and latency["msg_size"] == 64
    assert latency["min_us"] <= latency["p50_us"] <= latency["p90_us"] <= latency["p99_us"]
    assert latency["p99_us"] <= latency["max_us"]


def test_human_report_has_the_headline(server: int) -> None:
    result = run_vsockctl("throughput", "client", f"1:{server}", "--time", "1s")
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "receiver (server)" in text and "Gbit/s" in text and "cpu: client" in text


@pytest.mark.kernel_features
def test_zerocopy_works_or_says_the_kernel_lacks_it(server: int) -> None:
    result, records = run_client(server, "--zerocopy", "--time", "1s")
    release = tuple(int(x) for x in platform.release().split("-")[0].split(".")[:2])
    if release >= (6, 7):
        assert result.returncode == 0, result.stderr
        zerocopy = summary_of(records)["zerocopy"]
        # every notification number came back, at least one per sendmsg
        assert zerocopy["all_completed"] is True
        assert zerocopy["completed"] == zerocopy["ids"] >= zerocopy["sends"] > 0
        direction = summary_of(records)["directions"][0]
        assert direction["receiver"]["bytes"] == direction["sender"]["bytes"] > 0
    else:
        assert result.returncode == ExitStatus.VSOCK_UNAVAILABLE
        assert b"no MSG_ZEROCOPY on vsock" in result.stderr
        assert result.stderr.count(b"\n") == 1


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect((LOCAL, port))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


def test_garbage_is_refused_and_the_server_stays_up(server: int) -> None:
    reply = raw_exchange(server, os.urandom(4096))
    kind, _ = protocol.decode_header(reply[: protocol.HEADER.size])
    assert kind == protocol.FrameKind.REFUSE
    assert "not a vsockctl throughput peer" in json.loads(reply[protocol.HEADER.size :])["error"]
    result, _ = run_client(server, "--time", "0.5s")
    assert result.returncode == 0, result.stderr


def test_another_version_is_refused_by_name(server: int) -> None:
    frame = protocol.encode(protocol.FrameKind.TEST, {"mode": "throughput"})
    frame = frame[:4] + bytes([protocol.VERSION + 1]) + frame[5:]
    reply = raw_exchange(server, frame)
    error = json.loads(reply[protocol.HEADER.size :])["error"]
    assert f"version {protocol.VERSION + 1}" in error and f"speaks {protocol.VERSION}" in error
    bad_params = raw_exchange(server, protocol.encode(protocol.FrameKind.TEST, {"parallel": 0}))
    assert "parallel must be" in json.loads(bad_params[protocol.HEADER.size :])["error"]
    result, _ = run_client(server, "--time", "0.5s")
    assert result.returncode == 0, result.stderr


def started_client(port: int) -> subprocess.Popen[bytes]:
    """A 30 s client, returned once its first interval is out (Python starts slowly here)."""
    client = vsockctl(
        "--json",
        "throughput",
        "client",
        f"1:{port}",
        "--time",
        "30s",
        "--interval",
        "0.3s",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert client.stdout is not None
    for line in client.stdout:
        if json.loads(line)["event"] == "interval":
            return client
    raise AssertionError("the client ended before its first interval")


def partial_summary(client: subprocess.Popen[bytes]) -> tuple[Record, bytes]:
    out, err = client.communicate(timeout=60)
    records = json_records(out)
    summary = summary_of([r for r in records if r["event"] == "summary"])
    assert summary["complete"] is False
    assert summary["directions"][0]["sender"]["bytes"] > 0
    return summary, err


STOPS = [
    pytest.param(signal.SIGINT, ExitStatus.INTERRUPTED, "vsockctl: interrupted", id="SIGINT"),
    pytest.param(
        signal.SIGTERM, ExitStatus.TERMINATED, "vsockctl: terminated by SIGTERM", id="SIGTERM"
    ),
]


@pytest.mark.parametrize(("signum", "status", "last_line"), STOPS)
def test_client_stopped_gives_partial_results(
    server: int, signum: int, status: ExitStatus, last_line: str
) -> None:
    client = started_client(server)
    client.send_signal(signum)
    _, err = partial_summary(client)
    assert client.returncode == status, err
    assert err.decode().splitlines()[-1] == last_line
    assert b"Traceback" not in err
    result, _ = run_client(server, "--time", "0.5s")
    assert result.returncode == 0, result.stderr


def test_server_vanishing_gives_connection_lost_with_partial_results() -> None:
    proc, port = start_throughput_server()
    try:
        client = started_client(port)
        proc.kill()
        _, err = partial_summary(client)
    finally:
        stop_process(proc)
    assert client.returncode == ExitStatus.CONNECTION_LOST, err
    assert err.count(b"\n") == 1 and b"the peer went away" in err


@pytest.mark.parametrize(("signum", "status", "last_line"), STOPS)
def test_server_stopped_exits_with_the_signal(
    signum: int, status: ExitStatus, last_line: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")  # SIGABRT shows where it hangs, if it does
    proc, _ = start_throughput_server()
    try:
        proc.send_signal(signum)  # it is up: it said where it listens
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _, err = proc.communicate(timeout=20)
            raise AssertionError(f"still running 20 s after {signum!r}:\n{err.decode()}") from None
        assert proc.returncode == status
        assert proc.stderr is not None
        assert proc.stderr.read().decode().splitlines()[-1] == last_line
    finally:
        stop_process(proc)


# bench --loopback: the README's examples run it (tests/test_vm_readme.py).
