"""The edge where exceptions become one line on stderr and an exit status."""

from __future__ import annotations

import contextlib
import errno
import sys
import traceback
from typing import TYPE_CHECKING

from vsockctl.discover.sysctl import local_namespace_hint
from vsockctl.errors import (
    DataMismatchError,
    LocalIOError,
    ProtocolError,
    VsockError,
    VsockUnavailableError,
)
from vsockctl.exit_status import ExitStatus, exit_status_for
from vsockctl.signals import Terminated
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.constants import VMADDR_CID_HOST

from .env import Env
from .stdio import ReaderGone, is_closed_pipe, silence_stdout

if TYPE_CHECKING:  # annotations only: records load when --json prints one
    from vsockctl.events.system import PortCheck
    from vsockctl.events.transfer import Error


def describe(exc: BaseException) -> str:
    """One line that says what went wrong, what it means on vsock, and what to try."""
    if isinstance(exc, Terminated):
        return f"terminated by {exc.name}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, VsockError):
        meaning = exc.meaning
        where = f" {exc.where}" if exc.where is not None else ""
        line = f"{exc.doing}{where} failed: {meaning.cause} ({meaning.name})"
        hint = _namespace_hint(exc) or meaning.hint
        return f"{line}; {hint}" if hint else line
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


# What a peer that is there but in another network namespace looks like from here.
_NOT_FOUND = frozenset({errno.ECONNRESET, errno.ENODEV, errno.EHOSTUNREACH, errno.ETIMEDOUT})


def _namespace_hint(exc: VsockError) -> str | None:
    """When this namespace is in vsock's local mode (Linux 7+), a peer that was not
    found may well run in another one: say so instead of 'is the listener running?'.
    Only loopback and the VMs of this host are confined; the host above is not."""
    address = exc.address
    if not exc.operation.connecting or exc.errno not in _NOT_FOUND:
        return None
    if not isinstance(address, VsockAddress) or address.cid == VMADDR_CID_HOST:
        return None
    return local_namespace_hint()


def report(env: Env, exc: BaseException) -> ExitStatus:
    """Say what went wrong, once, and return the exit status for it.

    stdout's reader having gone (``| head -1``) ends the command without a word.
    """
    if is_closed_pipe(exc):
        silence_stdout()
        return ExitStatus.PIPE_CLOSED
    status = exit_status_for(exc)
    if env.verbose and not isinstance(exc, KeyboardInterrupt):
        env.stderr.write("".join(traceback.format_exception(exc)))
    env.stderr.write(f"vsockctl: {describe(exc)}\n")
    env.stderr.flush()
    if env.json:
        record = error_record(describe(exc), status)
        if isinstance(exc, OSError) and exc.errno is not None:
            record["errno"] = exc.errno
        if isinstance(exc, VsockError):
            record["errno_name"] = exc.meaning.name
            record["operation"] = exc.doing
            record["address"] = exc.where
        with contextlib.suppress(OSError):  # stdout itself is gone; stderr had the line
            env.emit(record)
    return status


def error_record(message: str, status: ExitStatus) -> Error:
    return {
        "event": "error",
        "error": message,
        "exit_status": int(status),
        "exit_name": status.name.lower(),
    }


def report_usage(message: str, json: bool) -> ExitStatus:
    """A bad command line: one line on stderr, and with --json an ``error`` record."""
    sys.stderr.write(f"vsockctl: {message}\n")
    if json:
        Env(json=True).emit(error_record(message, ExitStatus.USAGE))
    return ExitStatus.USAGE


def report_output_failure(exc: OSError | ReaderGone) -> ExitStatus:
    """Writing click's own output (help, version, a usage line) failed."""
    silence_stdout()
    if is_closed_pipe(exc):
        return ExitStatus.PIPE_CLOSED
    assert isinstance(exc, OSError)
    with contextlib.suppress(OSError):
        sys.stderr.write(f"vsockctl: {LocalIOError.wrap(exc, 'writing', 'stdout')}\n")
    return ExitStatus.ERROR


def port_check(port: int, failure: BaseException | None) -> PortCheck:
    """Whether a guest's ``port`` accepted: the record ``vms --probe`` and ``info --uds
    --port`` share (with what the failure means, and its exit status)."""
    if failure is None:
        return {"port": port, "open": True}
    status = exit_status_for(failure)
    return {"port": port, "open": False, "error": describe(failure), "exit_status": int(status)}
