"""The records of ``throughput``: the client prints ``start``, an ``interval`` per
--interval and a ``summary``; the server prints ``listening``, then per test
``test`` and ``test_done`` (or ``refused`` / ``test_failed``).

A summary nests records of its own (TEST, DIRECTION, TOTALS, STREAM, CPU,
INTERVAL, LATENCY, ZEROCOPY), each declared here once like the top-level ones.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, NotRequired, TypedDict

from .record import Declared

KEPT = "(kept for older scripts)"


class TestMode(StrEnum):
    THROUGHPUT = "throughput"
    LATENCY = "latency"


class TestDirection(StrEnum):
    SEND = "send"  # client to server
    REVERSE = "reverse"  # server to client
    BIDIR = "bidir"  # both at once

    @property
    def client_sends(self) -> bool:
        return self is not TestDirection.REVERSE

    @property
    def server_sends(self) -> bool:
        return self is not TestDirection.SEND


class TestParams(TypedDict):
    """TEST: the parameters both ends agreed on."""

    mode: Annotated[TestMode, '"throughput" or "latency"']
    direction: Annotated[TestDirection, '"send" (client to server), "reverse" or "bidir"']
    seconds: Annotated[float | None, "test length in seconds as asked, or null with --bytes"]
    nbytes: Annotated[int | None, "bytes to move (over all streams), or null with --time"]
    buf_size: Annotated[int, "bytes per send/recv call"]
    parallel: Annotated[int, "streams"]
    sock_type: Annotated[str, '"stream" or "seqpacket"']
    vsock_buffer_size: Annotated[int | None, "vsock buffer size asked for on both ends, or null"]
    rcvlowat: Annotated[int | None, "SO_RCVLOWAT asked for, or null"]
    zerocopy: Annotated[bool, "whether MSG_ZEROCOPY was asked for"]
    msg_size: Annotated[int, "message size with --latency"]
    interval: Annotated[float, "seconds between interval records as asked (0: none)"]


class StreamTotals(TypedDict):
    """STREAM: one data connection at one end."""

    bytes: Annotated[int, "bytes moved on this stream"]
    calls: Annotated[int, "send or recv calls"]
    elapsed_ns: Annotated[int, "first to last byte"]
    seconds: Annotated[float, f"elapsed_ns in seconds {KEPT}"]
    error: Annotated[str | None, "what ended the stream early, or null"]
    errno: Annotated[int | None, "its errno, or null"]
    bits_per_second: Annotated[float, f"8 * bytes / elapsed time {KEPT}"]


class Totals(TypedDict):
    """TOTALS: one direction at one end, over all streams."""

    bytes: Annotated[int, "bytes moved"]
    elapsed_ns: Annotated[int, "from the first to the last byte, over all streams"]
    bytes_per_second: Annotated[float, "bytes / elapsed time"]
    seconds: Annotated[float, f"elapsed_ns in seconds {KEPT}"]
    bits_per_second: Annotated[float, f"8 * bytes_per_second {KEPT}"]
    streams: Annotated[list[StreamTotals], "per stream: STREAM"]
    errors: Annotated[list[str], "stream errors as text"]


class DirectionTotals(TypedDict):
    """DIRECTION: one direction that carried data, as both ends saw it."""

    direction: Annotated[
        Literal["client-to-server", "server-to-client"],
        '"client-to-server" or "server-to-client"',
    ]
    receiver: Annotated[Totals | None, "TOTALS of the receiving end: the headline goodput"]
    sender: Annotated[Totals | None, "TOTALS of the sending end (null when it did not report)"]


class Cpu(TypedDict):
    """CPU: one end's process during the test."""

    user_ns: Annotated[int, "user CPU time of the process during the test"]
    system_ns: Annotated[int, "system CPU time"]
    wall_ns: Annotated[int, "wall-clock time"]
    user_seconds: Annotated[float, f"user_ns in seconds {KEPT}"]
    system_seconds: Annotated[float, f"system_ns in seconds {KEPT}"]
    wall_seconds: Annotated[float, f"wall_ns in seconds {KEPT}"]
    percent: Annotated[float, "100 * (user + system) / wall (above 100 with several streams)"]


class Counts(TypedDict):
    """COUNTS: bytes in one interval, one direction."""

    bytes: Annotated[int, "total in the interval"]
    streams: Annotated[list[int], "bytes per stream"]


class Interval(TypedDict):
    """INTERVAL: one --interval at one end."""

    start_ns: Annotated[int, "since the data started"]
    end_ns: Annotated[int, "since the data started"]
    start: Annotated[float, f"start_ns in seconds {KEPT}"]
    end: Annotated[float, f"end_ns in seconds {KEPT}"]
    sent: Annotated[Counts, '{"bytes": total in the interval, "streams": [bytes per stream]}']
    received: Annotated[Counts, '{"bytes": ..., "streams": [...]}']


class Latency(TypedDict):
    """LATENCY: round trips of --latency (the figures are absent when none completed)."""

    round_trips: Annotated[int, "messages sent and received back"]
    round_trips_per_second: NotRequired[Annotated[float, "round trips / seconds"]]
    msg_size: NotRequired[Annotated[int, "bytes per message"]]
    mean_ns: NotRequired[Annotated[int, "mean round trip"]]
    min_ns: NotRequired[Annotated[int, "shortest"]]
    p50_ns: NotRequired[Annotated[int, "median (logarithmic buckets 1% wide)"]]
    p90_ns: NotRequired[Annotated[int, "90th percentile"]]
    p99_ns: NotRequired[Annotated[int, "99th percentile"]]
    max_ns: NotRequired[Annotated[int, "longest"]]
    mean_us: NotRequired[Annotated[float, f"mean_ns in microseconds {KEPT}"]]
    min_us: NotRequired[Annotated[float, f"min_ns in microseconds {KEPT}"]]
    p50_us: NotRequired[Annotated[float, f"p50_ns in microseconds {KEPT}"]]
    p90_us: NotRequired[Annotated[float, f"p90_ns in microseconds {KEPT}"]]
    p99_us: NotRequired[Annotated[float, f"p99_ns in microseconds {KEPT}"]]
    max_us: NotRequired[Annotated[float, f"max_ns in microseconds {KEPT}"]]


class Zerocopy(TypedDict):
    """ZEROCOPY: what MSG_ZEROCOPY did on the sending end."""

    sends: Annotated[int, "sendmsg calls"]
    completed: Annotated[int, "notifications that came back"]
    ids: Annotated[int, "notifications the kernel numbered"]
    copied: Annotated[int, "completions where the kernel copied after all"]
    all_completed: Annotated[bool, "every send accounted for"]


Buffers = dict[str, int | str]  # buffer-size, buffer-max-size, rcvlowat: value or errno name


class CpuBoth(TypedDict):
    """CPUS: each end's CPU."""

    client: Annotated[Cpu, "CPU"]
    server: Annotated[Cpu | None, "CPU, or null when the server did not report"]


class BuffersBoth(TypedDict):
    """BUFFERS: each end's effective buffers."""

    client: Annotated[Buffers, "{buffer-size, buffer-max-size, rcvlowat}"]
    server: Annotated[Buffers | None, "the same, or null"]


class Summary(TypedDict):
    event: Literal["summary"]
    complete: Annotated[bool, "false when the test ended early (results are partial)"]
    test: Annotated[TestParams, "the test parameters both ends agreed on (TEST)"]
    directions: Annotated[
        list[DirectionTotals], "one object per direction that carried data (DIRECTION)"
    ]
    cpu: Annotated[CpuBoth, '{"client": CPU, "server": CPU or null}']
    buffers: Annotated[
        BuffersBoth,
        '{"client": {...}, "server": {...} or null}: effective buffer-size, '
        "buffer-max-size, rcvlowat of the first data socket",
    ]
    intervals: Annotated[list[Interval], "the client's INTERVAL records"]
    server_intervals: Annotated[list[Interval], "the server's INTERVAL records"]
    errors: Annotated[list[str], "what went wrong on any stream, as text (empty when none)"]
    latency: NotRequired[Annotated[Latency, "with --latency: LATENCY"]]
    zerocopy: NotRequired[Annotated[Zerocopy, "with --zerocopy: ZEROCOPY"]]


class Start(TestParams):
    event: Literal["start"]
    test: Annotated[int, "the test's number on the server"]
    data_port: Annotated[int, "where the data connections went"]
    buffers: Annotated[Buffers, "effective buffer sizes of the first data socket"]


class IntervalEvent(Interval):
    event: Literal["interval"]


class OfTest(TypedDict):
    """Which test, and whose."""

    test: Annotated[int, "its number on the server"]
    peer: Annotated[str, "the client"]


class Test(TestParams, OfTest):
    event: Literal["test"]


class TestDone(OfTest):
    event: Literal["test_done"]
    received_bytes: Annotated[int, "bytes the server received"]
    sent_bytes: Annotated[int, "bytes the server sent"]


class Refused(TypedDict):
    event: Literal["refused"]
    peer: Annotated[str, "who"]
    error: Annotated[str, "what was wrong"]


class TestFailed(OfTest):
    event: Literal["test_failed"]
    error: Annotated[str, "what happened"]


DECLARED = (
    Declared(Start, ("throughput",), "a test begins (client)"),
    Declared(IntervalEvent, ("throughput",), "one --interval of a test (client)"),
    Declared(Summary, ("throughput",), "the end of a test (client)"),
    Declared(Test, ("throughput",), "a test begins (server)"),
    Declared(TestDone, ("throughput",), "a test ended (server)"),
    Declared(Refused, ("throughput",), "a client that did not ask for a test properly (server)"),
    Declared(TestFailed, ("throughput",), "a test that broke off (server)"),
)

# What a throughput server tells of its tests.
ServerRecord = Test | TestDone | Refused | TestFailed
