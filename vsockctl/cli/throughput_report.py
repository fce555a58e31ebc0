"""How throughput results read: interval lines, the summary, and the server's log lines."""

from __future__ import annotations

from typing import Any

from vsockctl.events.throughput import (
    Buffers,
    Cpu,
    Interval,
    IntervalEvent,
    ServerRecord,
    Summary,
    TestMode,
    Totals,
)

from .env import Env
from .format import escape, human_bytes


def gbits(bits_per_second: float) -> str:
    return f"{bits_per_second / 1e9:7.2f} Gbit/s"


def interval_line(record: Interval) -> str:
    parts = [f"[{record['start']:6.2f}-{record['end']:6.2f} s]"]
    seconds = max(record["end"] - record["start"], 1e-9)
    for direction in ("sent", "received"):
        moved = record["received" if direction == "received" else "sent"]
        if moved["bytes"] or moved["streams"]:
            rate = moved["bytes"] * 8 / seconds
            parts.append(f"{direction:>8} {human_bytes(moved['bytes']):>10}  {gbits(rate)}")
    return "  ".join(parts)


def show_interval(env: Env, record: Interval) -> None:
    if env.json:
        env.emit(IntervalEvent(event="interval", **record))
    elif not env.quiet:
        env.out.print(escape(interval_line(record)), style="cyan" if env.io.stdout_isatty else None)


def _side(label: str, totals: Totals | None) -> str:
    if totals is None:
        return f"  {label:<20} (no figures: the other end did not report)"
    return (
        f"  {label:<20} {human_bytes(totals['bytes']):>10} in {totals['seconds']:6.2f} s  "
        f"{gbits(totals['bits_per_second'])}  {human_bytes(totals['bytes_per_second'])}/s"
    )


def _cpu(cpu: Cpu | None) -> str:
    if not cpu:
        return "?"
    user, system = (100 * cpu[k] / cpu["wall_seconds"] for k in ("user_seconds", "system_seconds"))
    return f"{cpu['percent']:.0f}% (user {user:.0f}%, system {system:.0f}%)"


def _buffers(buffers: Buffers | None) -> str:
    if not buffers:
        return "?"
    return ", ".join(f"{name} {value}" for name, value in buffers.items())


def summary_lines(summary: Summary) -> list[str]:
    test = summary["test"]
    lines = []
    if not summary["complete"]:
        lines.append("partial results (the test did not finish):")
    for direction in summary["directions"]:
        server_receives = direction["direction"] == "client-to-server"
        receiver = "receiver (server)" if server_receives else "receiver (client)"
        sender = "sender (client)" if server_receives else "sender (server)"
        lines.append(f"{direction['direction']}, {test['parallel']} stream(s), {test['sock_type']}")
        lines.append(_side(receiver, direction["receiver"]))
        lines.append(_side(sender, direction["sender"]))
        totals = direction["receiver"] or direction["sender"]
        streams = totals["streams"] if totals is not None else []
        if len(streams) > 1:
            for index, stream in enumerate(streams):
                lines.append(
                    f"    stream {index}: {human_bytes(stream['bytes']):>10}  "
                    f"{gbits(stream['bits_per_second'])}"
                )
    latency = summary.get("latency")
    if latency and latency.get("round_trips"):
        lines.append(
            f"latency, {latency['msg_size']}-byte messages: {latency['round_trips']} round trips, "
            f"{latency['round_trips_per_second']:.0f}/s"
        )
        lines.append(
            "  min {min_us:.1f}  p50 {p50_us:.1f}  p90 {p90_us:.1f}  p99 {p99_us:.1f}  "
            "max {max_us:.1f}  mean {mean_us:.1f} (microseconds)".format(**latency)
        )
    cpu = summary["cpu"]
    lines.append(f"cpu: client {_cpu(cpu['client'])}; server {_cpu(cpu['server'])}")
    buffers = summary["buffers"]
    lines.append(
        f"buffers: buf-size {test['buf_size']}; client {_buffers(buffers['client'])}; "
        f"server {_buffers(buffers['server'])}"
    )
    if "zerocopy" in summary:
        z = summary["zerocopy"]
        verdict = (
            "the kernel copied after all (SO_EE_CODE_ZEROCOPY_COPIED)"
            if z["copied"]
            else "no copies: the pages went out as they were"
        )
        lines.append(
            f"zerocopy: {z['sends']} sends, {z['completed']} of {z['ids']} notifications "
            f"back{'' if z['all_completed'] else ' (NOT ALL)'}, {z['copied']} copied; {verdict}"
        )
    return lines


def show_summary(env: Env, summary: Summary) -> None:
    if env.json:
        env.emit(summary)
        return
    if env.quiet:
        return
    for line in summary_lines(summary):
        env.out.print(escape(line))


def show_server_event(env: Env, record: ServerRecord) -> None:
    if env.json:
        env.emit(record)
        return
    if record["event"] == "test":
        what = "latency" if record["mode"] is TestMode.LATENCY else record["direction"]
        amount = f"{record['seconds']} s" if record["seconds"] else f"{record['nbytes']} bytes"
        env.message(
            f"test {record['test']} from {record['peer']}: {what}, {record['parallel']} "
            f"stream(s), {record['sock_type']}, {amount}"
        )
    elif record["event"] == "test_done":
        env.message(
            f"test {record['test']} done: received {human_bytes(record['received_bytes'])}, "
            f"sent {human_bytes(record['sent_bytes'])}"
        )
    elif record["event"] == "refused":
        env.message(f"refused a client at {record['peer']}: {record['error']}")
    elif record["event"] == "test_failed":
        env.message(f"test {record['test']} with {record['peer']} failed: {record['error']}")


class LiveDisplay:
    """On a terminal: a transient bar on stderr with the test's progress and the last
    interval's rate. Elsewhere (pipes, --json, -q): nothing."""

    def __init__(self, env: Env, seconds: float | None, nbytes: int | None) -> None:
        self.env = env
        self.progress: Any = None
        self.by_time = seconds is not None
        self.total = seconds if seconds is not None else nbytes
        self.moved = 0

    def __enter__(self) -> LiveDisplay:
        env = self.env
        if env.io.stderr_isatty and not env.quiet and not env.json:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=env.err,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("throughput", total=self.total, rate="")
        return self

    def interval(self, record: Interval) -> None:
        if self.progress is None:
            return
        seconds = max(record["end"] - record["start"], 1e-9)
        moved = record["sent"]["bytes"] + record["received"]["bytes"]
        self.moved += moved
        done = record["end"] if self.by_time else self.moved
        self.progress.update(self.task, completed=done, rate=gbits(moved * 8 / seconds))

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
