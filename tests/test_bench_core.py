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
from vsockctl.bench.peer import PeerResult
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


def _result_frame(*sent: int) -> bytes:
    """A RESULT frame as a sender makes it: per stream, the bytes it sent."""
    return protocol.encode(
        protocol.FrameKind.RESULT, {"sent": {"streams": [{"bytes": n} for n in sent]}}
    )


@pytest.mark.parametrize("result_first", [True, False], ids=["result-first", "data-first"])
def test_the_peers_result_ends_a_stream_whose_half_close_never_comes(result_first: bool) -> None:
    """Behind a hybrid mux the sender's half-close is lost: the sender's RESULT ends the
    receiver, whether it comes before the last byte is read or after."""
    data_tx, data_rx = socket.socketpair()
    control_peer, control = socket.socketpair()
    received = Counter()
    with data_tx, data_rx, control_peer, control:
        control.settimeout(10)
        peer = PeerResult(control)
        peer.watch([(data_rx, received)])
        reader = threading.Thread(
            target=recv_loop, args=(data_rx, memoryview(bytearray(4096)), received)
        )
        if result_first:
            control_peer.sendall(_result_frame(300_000))
            reader.start()
            data_tx.sendall(b"x" * 300_000)  # and no shutdown, as through the mux
        else:
            reader.start()
            data_tx.sendall(b"x" * 300_000)
            while received.bytes < 300_000:
                threading.Event().wait(0.01)
            control_peer.sendall(_result_frame(300_000))
        reader.join(10)
        assert not reader.is_alive(), "the receiver waited for a half-close"
        assert peer.result(10)["sent"]["streams"] == [{"bytes": 300_000}]
    assert received.bytes == 300_000 and received.error is None


def test_an_echo_loop_ends_at_the_count_its_client_sent() -> None:
    a, b = socket.socketpair()
    control_peer, control = socket.socketpair()
    echo = Counter()
    with a, b, control_peer, control:
        PeerResult(control).watch([(b, echo)])
        server = threading.Thread(target=echo_loop, args=(b, 64, echo))
        server.start()
        for _ in range(10):
            a.sendall(b"p" * 64)
            assert len(a.recv(64, socket.MSG_WAITALL)) == 64
        control_peer.sendall(_result_frame(640))  # no half-close
        server.join(10)
        assert not server.is_alive()
    assert echo.bytes == 640


def test_no_result_from_the_peer_times_out_in_words() -> None:
    control_peer, control = socket.socketpair()
    with control_peer, control:
        peer = PeerResult(control)
        peer.watch([])
        with pytest.raises(OSError, match=r"no RESULT frame within 0\.2 s"):
            peer.result(0.2)


def test_a_peer_that_closes_instead_of_a_result() -> None:
    control_peer, control = socket.socketpair()
    with control:
        peer = PeerResult(control)
        peer.watch([])
        control_peer.close()
        with pytest.raises(EOFError):
            peer.result(10)


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
