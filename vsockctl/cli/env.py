"""The streams, output settings and system hooks a command works with, in one object.

Tests replace parts of it (the socket factory, the /sys tree the probe reads,
the streams) by passing their own ``Env`` as CliRunner's ``obj``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, BinaryIO, TextIO, cast

import click

from vsockctl.discover.system import ProbePaths
from vsockctl.errors import LocalIOError
from vsockctl.vsock.sockets import SocketFactory

from .stdio import ReportingText, binary_stdin, binary_stdout

if TYPE_CHECKING:
    from rich.console import Console

    from vsockctl.events.catalog import Record

PIPE_WIDTH = 160


def _isatty(stream: IO[Any]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass
class Streams:
    """stdin/stdout as bytes, stderr as text, and whether each is a terminal."""

    stdin: BinaryIO
    stdout: BinaryIO
    stderr: TextIO
    stdin_isatty: bool = False
    stdout_isatty: bool = False
    stderr_isatty: bool = False

    @classmethod
    def current(cls) -> Streams:
        """The process's streams (CliRunner's, under a test)."""
        stdin, stdout = binary_stdin(), binary_stdout()
        stderr = sys.stderr if sys.stderr is not None else open(os.devnull, "w")  # noqa: SIM115
        return cls(stdin, stdout, stderr, _isatty(stdin), _isatty(stdout), _isatty(stderr))


@dataclass
class Env:
    """What a command runs against. Data goes to stdout; everything else to stderr."""

    json: bool = False
    quiet: bool = False
    verbose: int = 0
    socket_factory: SocketFactory = socket.socket
    probe_paths: ProbePaths = field(default_factory=ProbePaths)
    streams: Streams | None = None
    events_to_stderr: bool = False  # set when stdout carries data
    _consoles: dict[str, Console] = field(default_factory=dict, repr=False)

    @property
    def io(self) -> Streams:
        if self.streams is None:
            self.streams = Streams.current()
        return self.streams

    @property
    def stdin(self) -> BinaryIO:
        return self.io.stdin

    @property
    def stdout(self) -> BinaryIO:
        return self.io.stdout

    @property
    def stderr(self) -> TextIO:
        return self.io.stderr

    @property
    def out(self) -> Console:
        """A rich console on stdout, for a command's human-readable result."""
        if "out" not in self._consoles:
            from rich.console import Console  # imported on first use: rich is slow to load

            tty = self.io.stdout_isatty
            self._consoles["out"] = Console(
                file=sys.stdout,  # the run's (cli/stdio.py): its failures name stdout
                force_terminal=tty,
                highlight=False,
                # A pipe or file has no width: wide enough that text does not fold
                # (tables print whole rows there themselves: cli/table.py).
                width=None if tty else PIPE_WIDTH,
            )
        return self._consoles["out"]

    @property
    def err(self) -> Console:
        """A rich console on stderr, for messages and progress."""
        if "err" not in self._consoles:
            from rich.console import Console

            self._consoles["err"] = Console(
                file=cast(TextIO, ReportingText(self.stderr, "stderr")),
                force_terminal=self.io.stderr_isatty,
                highlight=False,
            )
        return self._consoles["err"]

    def message(self, text: str) -> None:
        """A line for the person at the terminal (stderr); silent with --quiet or --json."""
        if not self.quiet and not self.json:
            self.stderr.write(text + "\n")
            self.stderr.flush()

    def emit(self, record: Record) -> None:
        """One JSON object on one line (NDJSON): on stdout, or stderr when stdout has data."""
        from vsockctl.events.catalog import check  # loaded by the first record

        check(record)  # with VSOCKCTL_CHECK_EVENTS=1: only declared records go out
        line = json.dumps(record)
        if self.events_to_stderr:
            self.stderr.write(line + "\n")
            self.stderr.flush()
            return
        try:
            self.stdout.write(line.encode() + b"\n")
            self.stdout.flush()
        except OSError as exc:
            raise LocalIOError.wrap(exc, "writing", "stdout") from exc


def current_env() -> Env:
    """The Env of the running command (created by the top-level group)."""
    ctx = click.get_current_context()
    env = ctx.find_object(Env)
    if env is None:  # a command invoked on its own, outside the group
        env = Env()
        ctx.obj = env
    return env
