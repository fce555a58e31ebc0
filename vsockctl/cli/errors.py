"""The edge where exceptions become one line on stderr and an exit status."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
import traceback

from vsockctl.errors import (
    DataMismatchError,
    LocalIOError,
    ProtocolError,
    VsockError,
    VsockUnavailableError,
)
from vsockctl.signals import Terminated
from vsockctl.status import ExitStatus, exit_status_for

from .env import Env


def describe(exc: BaseException) -> str:
    """One line that says what went wrong, what it means on vsock, and what to try."""
    if isinstance(exc, Terminated):
        return f"terminated by {exc.name}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, VsockError):
        meaning = exc.meaning
        where = f" {exc.where}" if exc.where is not None else ""
        line = f"{exc.operation}{where} failed: {meaning.cause} ({meaning.name})"
        return f"{line}; {meaning.hint}" if meaning.hint else line
    if isinstance(exc, LocalIOError):
        return str(exc)
    if isinstance(exc, VsockUnavailableError):
        return f"{exc}; {exc.hint}" if exc.hint else str(exc)
    if isinstance(exc, DataMismatchError | ProtocolError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return f"unexpected error: {type(exc).__name__}: {exc} (rerun with -v for the traceback)"


def _silence_broken_stdout() -> None:
    """After EPIPE on stdout, point it at /dev/null so Python's exit flush stays quiet."""
    with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def report(env: Env, exc: BaseException) -> ExitStatus:
    """Say what went wrong, once, and return the exit status for it."""
    status = exit_status_for(exc)
    if isinstance(exc, LocalIOError) and exc.name == "stdout" and exc.errno == errno.EPIPE:
        _silence_broken_stdout()
        env.events_to_stderr = True
    if env.verbose and not isinstance(exc, KeyboardInterrupt):
        env.stderr.write("".join(traceback.format_exception(exc)))
    env.stderr.write(f"vsockctl: {describe(exc)}\n")
    env.stderr.flush()
    if env.json:
        record: dict[str, object] = {
            "event": "error",
            "message": describe(exc),
            "exit_status": int(status),
            "exit_name": status.name.lower(),
        }
        if isinstance(exc, OSError) and exc.errno is not None:
            record["errno"] = exc.errno
        if isinstance(exc, VsockError):
            record.update(
                errno_name=exc.meaning.name,
                operation=exc.operation,
                address=exc.where,
            )
        with contextlib.suppress(OSError):  # stdout itself is gone; stderr had the line
            env.emit(record)
    return status
