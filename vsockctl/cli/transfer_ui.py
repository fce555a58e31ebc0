"""Progress and stats for commands that move bytes.

Progress shows only on a terminal's stderr (transient, with speed); stats go
to stderr as one line, or as a ``stats`` JSON event, also after an error or
Ctrl-C, marked as partial.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING

from vsockctl.events.transfer import Stats
from vsockctl.transfer.stats import TransferStats

from .env import Env
from .format import human_bytes, human_rate, human_seconds, plural

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class TransferDisplay:
    """A rich progress bar on a terminal; nothing at all otherwise."""

    def __init__(self, env: Env, label: str, total: int | None) -> None:
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        if env.io.stderr_isatty and not env.quiet and not env.json:
            from rich.progress import (  # only on a terminal: rich is slow to load
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=env.err,
                transient=True,
            )
            self.task = self.progress.add_task(label, total=total, rate="")

    def __enter__(self) -> TransferDisplay:
        if self.progress is not None:
            self.progress.start()
        return self

    def update(self, stats: TransferStats) -> None:
        if self.progress is not None and self.task is not None:
            # the rate as the stats line says it (MiB/s), not rich's MB/s
            speed = self.progress.tasks[0].speed
            rate = f"{human_bytes(speed)}/s" if speed else ""
            self.progress.update(self.task, completed=stats.moved_bytes, rate=rate)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.progress is not None:
            self.progress.stop()


def stats_line(stats: TransferStats, complete: bool) -> str:
    parts = []
    if stats.sent_bytes or not stats.received_bytes:
        parts.append(f"sent {human_bytes(stats.sent_bytes)} ({stats.sent_bytes} bytes)")
    if stats.received_bytes:
        parts.append(f"received {human_bytes(stats.received_bytes)} ({stats.received_bytes} bytes)")
    if stats.received_messages or stats.sent_messages:
        count = stats.received_messages or stats.sent_messages
        sizes = stats.message_sizes
        shape = ""
        if sizes:
            shape = f", sizes {min(sizes)}..{max(sizes)}" if len(sizes) > 1 else f" of {min(sizes)}"
        parts.append(f"{plural(count, 'message')}{shape}")
        if stats.truncated_messages:
            parts.append(f"{stats.truncated_messages} truncated")
    line = ", ".join(parts)
    line += f" in {human_seconds(stats.elapsed_ns)}, {human_rate(stats.rate())}"
    return line if complete else f"partial: {line}"


def report_stats(env: Env, stats: TransferStats, complete: bool) -> None:
    stats.finish()
    if env.json:
        env.emit(Stats(event="stats", complete=complete, **stats.to_record()))
        return
    if not env.quiet:
        env.message(stats_line(stats, complete))
        for label, digest in (("sent", stats.sent_sha256), ("received", stats.received_sha256)):
            if digest is not None:
                env.message(f"sha256 {label}: {digest}")


@contextmanager
def reporting(
    env: Env, stats: TransferStats, *, when_complete: bool = True
) -> Iterator[TransferStats]:
    """Report ``stats`` when the block ends: partial whenever it raised (even with
    nothing moved: the error's hint points at them), complete if ``when_complete``."""
    try:
        yield stats
    except BaseException:
        report_stats(env, stats, complete=False)
        raise
    if when_complete:
        report_stats(env, stats, complete=True)
