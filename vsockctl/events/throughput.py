"""The keys of ``vsockctl throughput --json`` output: stable, documented, checked by tests.

Each record is one JSON object per line with an ``event`` key: the client
prints ``start``, one ``interval`` per --interval and a ``summary``; the
server prints ``listening``, then per test ``test`` and ``test_done`` (or
``refused`` / ``test_failed``).
"""

from __future__ import annotations

from typing import Any

# What each key holds, for the man page; nested objects are described below.
SUMMARY: dict[str, str] = {
    "event": '"summary"',
    "complete": "false when the test ended early (results are partial)",
    "test": "the test parameters both ends agreed on (see TEST below)",
    "directions": "one object per direction that carried data (see DIRECTION)",
    "cpu": '{"client": CPU, "server": CPU or null}',
    "buffers": '{"client": {...}, "server": {...} or null}: effective buffer-size, '
    "buffer-max-size, rcvlowat of the first data socket",
    "intervals": "the client's INTERVAL records",
    "server_intervals": "the server's INTERVAL records",
    "errors": "what went wrong on any stream, as text (empty when all went well)",
}
SUMMARY_OPTIONAL: dict[str, str] = {
    "latency": "with --latency: LATENCY",
    "zerocopy": 'with --zerocopy: {"sends": sendmsg calls, "completed": notifications '
    'that came back, "ids": notifications the kernel numbered, "copied": completions '
    'where the kernel copied after all, "all_completed": every send accounted for}',
}
TEST: dict[str, str] = {
    "mode": '"throughput" or "latency"',
    "direction": '"send" (client to server), "reverse" or "bidir"',
    "seconds": "test length, or null with --bytes",
    "nbytes": "bytes to move (over all streams), or null with --time",
    "buf_size": "bytes per send/recv call",
    "parallel": "streams",
    "sock_type": '"stream" or "seqpacket"',
    "vsock_buffer_size": "vsock buffer size asked for on both ends, or null",
    "rcvlowat": "SO_RCVLOWAT asked for, or null",
    "zerocopy": "whether MSG_ZEROCOPY was asked for",
    "msg_size": "message size with --latency",
    "interval": "seconds between interval records (0: none)",
}
DIRECTION: dict[str, str] = {
    "direction": '"client-to-server" or "server-to-client"',
    "receiver": "TOTALS of the receiving end: the headline goodput",
    "sender": "TOTALS of the sending end (null when that end did not report)",
}
TOTALS: dict[str, str] = {
    "bytes": "bytes moved",
    "elapsed_ns": "from the first to the last byte, over all streams",
    "bytes_per_second": "bytes / elapsed time",
    "seconds": "elapsed_ns in seconds (kept for older scripts)",
    "bits_per_second": "8 * bytes_per_second (kept for older scripts)",
    "streams": "per stream: STREAM",
    "errors": "stream errors as text",
}
STREAM: dict[str, str] = {
    "bytes": "bytes moved on this stream",
    "calls": "send or recv calls",
    "elapsed_ns": "first to last byte",
    "seconds": "elapsed_ns in seconds (kept for older scripts)",
    "error": "what ended the stream early, or null",
    "errno": "its errno, or null",
    "bits_per_second": "8 * bytes / elapsed time (kept for older scripts)",
}
CPU: dict[str, str] = {
    "user_ns": "user CPU time of the process during the test",
    "system_ns": "system CPU time",
    "wall_ns": "wall-clock time",
    "user_seconds": "user_ns in seconds (kept for older scripts)",
    "system_seconds": "system_ns in seconds (kept for older scripts)",
    "wall_seconds": "wall_ns in seconds (kept for older scripts)",
    "percent": "100 * (user + system) / wall (above 100 with several streams)",
}
INTERVAL: dict[str, str] = {
    "start_ns": "since the data started",
    "end_ns": "since the data started",
    "start": "start_ns in seconds (kept for older scripts)",
    "end": "end_ns in seconds (kept for older scripts)",
    "sent": '{"bytes": total in the interval, "streams": [bytes per stream]}',
    "received": '{"bytes": ..., "streams": [...]}',
}
LATENCY: dict[str, str] = {
    "round_trips": "messages sent and received back",
    "round_trips_per_second": "round trips / seconds",
    "msg_size": "bytes per message",
    "mean_ns": "mean round trip",
    "min_ns": "shortest",
    "p50_ns": "median (logarithmic buckets 1% wide)",
    "p90_ns": "90th percentile",
    "p99_ns": "99th percentile",
    "max_ns": "longest",
    **{
        f"{name}_us": f"{name}_ns in microseconds (kept for older scripts)"
        for name in ("mean", "min", "p50", "p90", "p99", "max")
    },
}


def _check(record: Any, keys: dict[str, str], optional: dict[str, str], where: str) -> list[str]:
    if not isinstance(record, dict):
        return [f"{where} is not an object"]
    problems = [f"{where} lacks {k!r}" for k in keys if k not in record]
    problems += [
        f"{where} has unknown {k!r}" for k in record if k not in keys and k not in optional
    ]
    return problems


def validate_summary(summary: dict[str, Any]) -> list[str]:
    """Every way ``summary`` departs from the documented keys (empty when it matches)."""
    problems = _check(summary, SUMMARY, SUMMARY_OPTIONAL, "summary")
    problems += _check(summary.get("test"), TEST, {}, "test")
    for i, direction in enumerate(summary.get("directions", [])):
        problems += _check(direction, DIRECTION, {}, f"directions[{i}]")
        for side in ("receiver", "sender"):
            totals = direction.get(side)
            if totals is not None:
                problems += _check(totals, TOTALS, {}, f"directions[{i}].{side}")
                for j, stream in enumerate(totals.get("streams", [])):
                    problems += _check(stream, STREAM, {}, f"directions[{i}].{side}.streams[{j}]")
    for end in ("client", "server"):
        cpu = summary.get("cpu", {}).get(end)
        if cpu is not None:
            problems += _check(cpu, CPU, {}, f"cpu.{end}")
    for key in ("intervals", "server_intervals"):
        for i, interval in enumerate(summary.get(key, [])):
            problems += _check(interval, INTERVAL, {}, f"{key}[{i}]")
    if "latency" in summary:
        problems += _check(summary["latency"], LATENCY, {}, "latency")
    return problems


def validate_interval(record: dict[str, Any]) -> list[str]:
    """Problems of a live ``interval`` event (INTERVAL keys plus ``"event": "interval"``)."""
    problems = _check(record, INTERVAL, {"event": ""}, "interval")
    if record.get("event") != "interval":
        problems.append("interval event is not 'interval'")
    return problems
