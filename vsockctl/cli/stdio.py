"""The standard streams at the edges: closed when vsockctl starts, full or a closed
pipe when it writes.

A shell can start vsockctl with stdin or stdout closed (``<&-``, ``>&-``);
Python then has no ``sys.stdin``/``sys.stdout``. Their descriptors get
/dev/null so that no socket or file made later takes number 0 or 1 and is
mistaken for them, and the streams become :class:`ClosedStream`, which fails
with a one-line error when used. A reader that stops reading (``| head -1``)
ends vsockctl quietly, as it ends ``cat``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections.abc import Iterator
from typing import BinaryIO, TextIO, cast

from vsockctl.errors import LocalIOError

STANDARD_FDS = (0, 1, 2)


def reserve_standard_fds() -> None:
    """Put /dev/null on each standard descriptor that is closed."""
    for fd in STANDARD_FDS:
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: ``fd``


class ClosedStream(io.RawIOBase):
    """stdin or stdout as vsockctl found it: closed. Reading or writing fails with EBADF."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.stream_name = name

    def _closed(self, operation: str) -> LocalIOError:
        return LocalIOError(
            errno.EBADF, operation, self.stream_name, f"{self.stream_name} is closed (<&- or >&-)"
        )

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> int:
        raise self._closed("reading")

    def write(self, data: object) -> int:
        raise self._closed("writing")

    def fileno(self) -> int:
        raise io.UnsupportedOperation("closed when vsockctl started")


def binary_stdin() -> BinaryIO:
    return sys.stdin.buffer if sys.stdin is not None else _closed("stdin")


def binary_stdout() -> BinaryIO:
    return sys.stdout.buffer if sys.stdout is not None else _closed("stdout")


def _closed(name: str) -> BinaryIO:
    return cast(BinaryIO, ClosedStream(name))


class ReaderGone(Exception):
    """stdout's reader went away. Not an OSError: click would end with exit 1 at one."""


def is_closed_pipe(exc: BaseException) -> bool:
    """Whether ``exc`` is stdout's reader having gone (``vsockctl ... | head -1``)."""
    if isinstance(exc, LocalIOError):
        return exc.name == "stdout" and exc.errno == errno.EPIPE
    # Not any BrokenPipeError: a socket's would pass for stdout's and go unsaid.
    return isinstance(exc, ReaderGone)


@contextlib.contextmanager
def standard_streams() -> Iterator[None]:
    """Around a run: /dev/null under closed standard descriptors; sys.stdin and
    sys.stdout that say what failed (closed, full, a reader gone), for click's own
    output (help, version, usage) as for the commands'."""
    reserve_standard_fds()
    saved = sys.stdin, sys.stdout
    if sys.stdin is None:
        sys.stdin = io.TextIOWrapper(_closed("stdin"))
    stdout = sys.stdout or io.TextIOWrapper(_closed("stdout"))
    sys.stdout = cast(TextIO, ReportingText(stdout, "stdout"))
    try:
        yield
    finally:
        sys.stdin, sys.stdout = saved


def flush_stdout() -> None:
    """Flush what Python holds for stdout now, where a failure can still be reported."""
    if sys.stdout is not None:
        try:
            sys.stdout.flush()
        except OSError as exc:
            silence_stdout()
            raise LocalIOError.wrap(exc, "writing", "stdout") from exc


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's own flush at exit stays quiet."""
    with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class ReportingText:
    """A text stream whose write failures name it (:class:`LocalIOError`), for rich.

    rich turns a broken pipe into its own exit 1; vsockctl wants to decide that
    itself (quiet, 141), and a full disk to be said as "writing stdout failed".
    """

    def __init__(self, stream: TextIO, name: str) -> None:
        self.stream = stream
        self.name = name

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as exc:
            raise self._failed(exc) from exc

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: OSError) -> Exception:
        if exc.errno == errno.EPIPE:
            return ReaderGone(self.name)
        return LocalIOError.wrap(exc, "writing", self.name)

    def __getattr__(self, attribute: str) -> object:
        return getattr(self.stream, attribute)
