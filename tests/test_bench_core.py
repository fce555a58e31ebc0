"""The throughput core without traffic: control frames, test parameters, histogram, pumps.

The pumps run over socketpairs here (AF_UNIX): the same loops carry vsock in
the VM tier.
"""

from __future__ import annotations

import io
import json
import random
import socket
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vsockctl.bench import protocol
from vsockctl.bench.latency import Histogram, echo_loop, ping_loop
from vsockctl.bench.pumps import Counter, Limit, recv_loop, send_loop
from vsockctl.bench.spec import TestSpec as Spec  # not a pytest class
from vsockctl.cli.env import Env, Streams
from vsockctl.cli.throughput_report import LiveDisplay
from vsockctl.errors import ProtocolError
from vsockctl.events import throughput as records
from vsockctl.events.throughput import Interval


def test_frames_round_trip_over_a_socket() -> None:
    a, b = socket.socketpair()
    with a, b:
        protocol.send_frame(a, protocol.FrameKind.TEST, {"parallel": 2})
        assert protocol.recv_frame(b, protocol.FrameKind.TEST) == (
            protocol.FrameKind.TEST,
            {"parallel": 2},
        )
        protocol.send_frame(a, protocol.FrameKind.REFUSE, {"error": "busy"})
        with pytest.raises(ProtocolError, match="the peer refused: busy"):
            protocol.recv_frame(b, protocol.FrameKind.ACCEPT)
        a.close()
        with pytest.raises(EOFError):
            protocol.recv_frame(b)


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (b"GET / HTTP/1.", "not a vsockctl throughput peer"),
        (protocol.HEADER.pack(b"VSKB", 9, 1, 0, 2), "speaks throughput protocol version 9"),
        (protocol.HEADER.pack(b"VSKB", 1, 99, 0, 2), "unknown control frame kind 99"),
        (protocol.HEADER.pack(b"VSKB", 1, 1, 0, 1 << 20), "is over 65536"),
    ],
)
def test_bad_headers_are_named(header: bytes, fragment: str) -> None:
    with pytest.raises(ProtocolError, match=fragment):
        protocol.decode_header(header[: protocol.HEADER.size].ljust(protocol.HEADER.size, b"x"))


@given(st.binary(min_size=protocol.HEADER.size, max_size=protocol.HEADER.size))
def test_random_headers_are_accepted_only_when_valid(header: bytes) -> None:
    try:
        kind, length = protocol.decode_header(header)
    except ProtocolError:
        return
    assert header[:4] == protocol.MAGIC and header[4] == protocol.VERSION
    assert kind in protocol.FrameKind and length <= protocol.MAX_PAYLOAD


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"parallel": 0}, "parallel must be"),
        ({"seconds": None, "nbytes": None}, "exactly one of seconds and bytes"),
        ({"direction": "sideways"}, "direction"),
        ({"bogus": 1}, "unknown test parameters: bogus"),
        ({"mode": "latency", "parallel": 2}, "latency runs one stream"),
        ({"buf_size": 1 << 30}, "buffers above"),
    ],
)
def test_bad_test_parameters_are_refused(params: dict[str, object], fragment: str) -> None:
    with pytest.raises(ProtocolError, match=fragment):
        Spec.from_dict({**Spec().to_record(), **params})


def test_spec_round_trips_through_json() -> None:
    spec = Spec(direction=records.TestDirection.BIDIR, parallel=3, nbytes=1 << 20, seconds=None)
    assert Spec.from_dict(json.loads(json.dumps(spec.to_record()))) == spec


def test_histogram_percentiles_within_one_percent() -> None:
    rng = random.Random(7)
    samples = [rng.randint(1_000, 5_000_000) for _ in range(20_000)]
    histogram = Histogram()
    histogram.SAMPLES = 4096  # fold several times on the way
    for ns in samples:
        histogram.add(ns)
    ordered = sorted(samples)
    summary = histogram.summary()
    assert summary["round_trips"] == len(samples)
    assert summary["min_us"] == ordered[0] / 1e3 and summary["max_us"] == ordered[-1] / 1e3
    for p in (50, 90, 99):
        exact = ordered[int(len(ordered) * p / 100) - 1]
        assert abs(histogram.percentile(p) - exact) / exact < 0.011, p


def test_send_and_recv_loops_count_every_byte() -> None:
    a, b = socket.socketpair()
    sent, received = Counter(), Counter()
    buf = memoryview(bytearray(100_000))
    with a, b:
        reader = threading.Thread(
            target=recv_loop, args=(b, memoryview(bytearray(65536)), received)
        )
        reader.start()
        send_loop(a, buf, sent, Limit(seconds=None, nbytes=1_234_567))
        reader.join(10)
    assert sent.bytes == received.bytes == 1_234_567
    assert sent.error is None and received.error is None


def test_ping_and_echo_loops_measure_round_trips() -> None:
    a, b = socket.socketpair()
    histogram, ping, echo = Histogram(), Counter(), Counter()
    with a, b:
        server = threading.Thread(target=echo_loop, args=(b, 64, echo))
        server.start()
        ping_loop(
            a, 64, limit=Limit(seconds=None, nbytes=64 * 500), histogram=histogram, counter=ping
        )
        server.join(10)
    assert histogram.summary()["round_trips"] == 500
    assert ping.bytes == echo.bytes == 64 * 500


def test_live_display_only_on_a_terminal() -> None:
    record: Interval = {
        "start_ns": 0,
        "end_ns": 1_000_000_000,
        "start": 0.0,
        "end": 1.0,
        "sent": {"bytes": 125_000_000, "streams": [125_000_000]},
        "received": {"bytes": 0, "streams": []},
    }
    piped = Env(streams=Streams(io.BytesIO(), io.BytesIO(), io.StringIO()))
    with LiveDisplay(piped, 10.0, None) as live:
        live.interval(record)
        assert live.progress is None
    stderr = io.StringIO()
    tty = Env(streams=Streams(io.BytesIO(), io.BytesIO(), stderr, stderr_isatty=True))
    with LiveDisplay(tty, 10.0, None) as live:
        live.interval(record)
        task = live.progress.tasks[0]
        assert task.completed == 1.0 and task.total == 10.0
        assert task.fields["rate"].strip() == "1.00 Gbit/s"
