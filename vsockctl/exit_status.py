"""Exit statuses: one table, documented in README, --help and the man page."""

from __future__ import annotations

import errno
from enum import IntEnum

from vsockctl.errors import (
    DataMismatchError,
    ProtocolError,
    VsockError,
    VsockUnavailableError,
)
from vsockctl.signals import Terminated


class ExitStatus(IntEnum):
    """What ``vsockctl`` returns to the shell."""

    OK = 0
    ERROR = 1  # anything not listed below
    USAGE = 2  # bad command line (click's own code)
    VSOCK_UNAVAILABLE = 3  # no AF_VSOCK, no transport for the route, no sock_diag
    CONNECTION_REFUSED = 4  # nothing listens there (reset or refused)
    TIMED_OUT = 5  # no answer in time
    DATA_MISMATCH = 6  # received data differ from what was expected
    CONNECTION_LOST = 7  # the peer went away in the middle
    PROTOCOL_ERROR = 8  # the peer answered, but not in the expected protocol
    HANGUP = 129  # SIGHUP (128 + 1): the terminal went away
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
    PIPE_CLOSED = 141  # stdout's reader went away (128 + SIGPIPE): '| head -1'
    TERMINATED = 143  # SIGTERM (128 + 15): systemd, timeout(1), kill


EXIT_STATUS_MEANINGS: dict[ExitStatus, str] = {
    ExitStatus.OK: "success",
    ExitStatus.ERROR: "any other failure (a local file, an unexpected error)",
    ExitStatus.USAGE: "bad command line: unknown option, malformed address or size",
    ExitStatus.VSOCK_UNAVAILABLE: "vsock unavailable: no AF_VSOCK, no transport, or no vsock_diag",
    ExitStatus.CONNECTION_REFUSED: "connection refused or reset: nothing listens on that CID:port",
    ExitStatus.TIMED_OUT: "timed out: no answer within the timeout",
    ExitStatus.DATA_MISMATCH: "data mismatch: size or checksum differ from what was expected",
    ExitStatus.CONNECTION_LOST: "connection lost: the peer went away during the transfer",
    ExitStatus.PROTOCOL_ERROR: "protocol error: the peer answered in an unexpected way",
    ExitStatus.HANGUP: "hung up (SIGHUP); handled as Ctrl-C is",
    ExitStatus.INTERRUPTED: "interrupted (Ctrl-C)",
    ExitStatus.PIPE_CLOSED: "stdout's reader went away (a pipe into head); nothing more is said",
    ExitStatus.TERMINATED: "terminated (SIGTERM: systemd, timeout); handled as Ctrl-C is",
}

_UNAVAILABLE_ERRNOS = {errno.EAFNOSUPPORT, errno.ENODEV, errno.ENETUNREACH, errno.ESOCKTNOSUPPORT}
_REFUSED_ERRNOS = {errno.ECONNRESET, errno.ECONNREFUSED}
_LOST_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ECONNABORTED}


def exit_status_for(exc: BaseException) -> ExitStatus:
    """The exit status that best describes ``exc``."""
    if isinstance(exc, Terminated):
        return ExitStatus(128 + exc.signum)
    if isinstance(exc, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    if isinstance(exc, DataMismatchError):
        return ExitStatus.DATA_MISMATCH
    if isinstance(exc, ProtocolError):
        return ExitStatus.PROTOCOL_ERROR
    if isinstance(exc, VsockUnavailableError):
        return ExitStatus.VSOCK_UNAVAILABLE
    if isinstance(exc, VsockError):
        if exc.errno == errno.ETIMEDOUT:
            return ExitStatus.TIMED_OUT
        if exc.operation.mid_transfer and exc.errno == errno.ENODEV:
            return ExitStatus.CONNECTION_LOST  # the peer's VM is gone
        if exc.errno in _UNAVAILABLE_ERRNOS:
            return ExitStatus.VSOCK_UNAVAILABLE
        if exc.operation.connecting and exc.errno in _REFUSED_ERRNOS:
            return ExitStatus.CONNECTION_REFUSED
        if exc.errno in _LOST_ERRNOS:
            return ExitStatus.CONNECTION_LOST
        return ExitStatus.ERROR
    if isinstance(exc, TimeoutError):
        return ExitStatus.TIMED_OUT
    return ExitStatus.ERROR
