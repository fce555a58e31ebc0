"""Every exit status, from the table to the command line.

Statuses that need a live peer (refused, timed out, lost, mismatch, protocol)
are reached through real commands in the VM tier and the transfer tests; here
each one is checked from the exception that produces it.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, cast

import pytest

from tests.conftest import Invoke
from tests.fakes import FailingSocketFactory, empty_machine, errno_factory
from vsockctl.cli.env import Env
from vsockctl.errors import (
    DataMismatchError,
    Operation,
    ProtocolError,
    VsockError,
    VsockUnavailableError,
)
from vsockctl.exit_status import EXIT_STATUS_MEANINGS, ExitStatus, exit_status_for
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.sockets import SocketFactory


def test_codes_are_stable() -> None:
    assert {s.name: int(s) for s in ExitStatus} == {
        "OK": 0,
        "ERROR": 1,
        "USAGE": 2,
        "VSOCK_UNAVAILABLE": 3,
        "CONNECTION_REFUSED": 4,
        "TIMED_OUT": 5,
        "DATA_MISMATCH": 6,
        "CONNECTION_LOST": 7,
        "PROTOCOL_ERROR": 8,
        "HANGUP": 129,
        "INTERRUPTED": 130,
        "PIPE_CLOSED": 141,
        "TERMINATED": 143,
    }
    assert set(EXIT_STATUS_MEANINGS) == set(ExitStatus)


ADDR = VsockAddress(1, 5000)


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (VsockError(errno.ECONNRESET, Operation.CONNECT, ADDR), ExitStatus.CONNECTION_REFUSED),
        (VsockError(errno.ECONNREFUSED, Operation.CONNECT, ADDR), ExitStatus.CONNECTION_REFUSED),
        (VsockError(errno.ETIMEDOUT, Operation.CONNECT, ADDR), ExitStatus.TIMED_OUT),
        (VsockError(errno.ECONNRESET, Operation.RECV, ADDR), ExitStatus.CONNECTION_LOST),
        (VsockError(errno.EPIPE, Operation.SEND, ADDR), ExitStatus.CONNECTION_LOST),
        (VsockError(errno.ENODEV, Operation.CONNECT, ADDR), ExitStatus.VSOCK_UNAVAILABLE),
        (
            VsockError(errno.ENODEV, Operation.SEND, ADDR),
            ExitStatus.CONNECTION_LOST,
        ),  # its VM is gone
        (VsockError(errno.ENODEV, Operation.RECV, ADDR), ExitStatus.CONNECTION_LOST),
        (VsockError(errno.EAFNOSUPPORT, Operation.SOCKET), ExitStatus.VSOCK_UNAVAILABLE),
        (VsockError(errno.EADDRINUSE, Operation.BIND, ADDR), ExitStatus.ERROR),
        (VsockUnavailableError("no vsock_diag"), ExitStatus.VSOCK_UNAVAILABLE),
        (DataMismatchError("sha256 differs"), ExitStatus.DATA_MISMATCH),
        (ProtocolError("bad reply"), ExitStatus.PROTOCOL_ERROR),
        (TimeoutError(), ExitStatus.TIMED_OUT),
        (KeyboardInterrupt(), ExitStatus.INTERRUPTED),
        (RuntimeError("boom"), ExitStatus.ERROR),
    ],
)
def test_exception_to_status(exc: BaseException, status: ExitStatus) -> None:
    assert exit_status_for(exc) is status


def _env(factory: Any, root: Path | None = None) -> Env:
    env = Env(socket_factory=cast(SocketFactory, factory))
    if root is not None:
        env.probe_paths = empty_machine(root)
    return env


def test_ok(invoke: Invoke) -> None:
    result = invoke(["-q", "info"])
    usable = Path("/sys/module/vsock").is_dir()
    assert result.exit_code == (ExitStatus.OK if usable else ExitStatus.VSOCK_UNAVAILABLE)


def test_usage_error_is_one_line(invoke: Invoke) -> None:
    result = invoke(["info", "--bogus"])
    assert result.exit_code == ExitStatus.USAGE
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "--bogus" in result.stderr and "vsockctl info --help" in result.stderr


def test_vsock_unavailable(invoke: Invoke, tmp_path: Path) -> None:
    env = _env(errno_factory(errno.EAFNOSUPPORT), tmp_path)
    result = invoke(["info"], env=env)
    assert result.exit_code == ExitStatus.VSOCK_UNAVAILABLE
    assert "no AF_VSOCK" in result.stdout


def test_unexpected_error_is_one_line_with_a_hint(invoke: Invoke, tmp_path: Path) -> None:
    result = invoke(["info"], env=_env(FailingSocketFactory(RuntimeError("boom")), tmp_path))
    assert result.exit_code == ExitStatus.ERROR
    assert (
        result.stderr
        == "vsockctl: unexpected error: RuntimeError: boom (rerun with -v for the traceback)\n"
    )


def test_verbose_shows_the_traceback(invoke: Invoke, tmp_path: Path) -> None:
    result = invoke(["-v", "info"], env=_env(FailingSocketFactory(RuntimeError("boom")), tmp_path))
    assert result.exit_code == ExitStatus.ERROR
    assert "Traceback (most recent call last)" in result.stderr


def test_interrupted(invoke: Invoke, tmp_path: Path) -> None:
    result = invoke(["info"], env=_env(FailingSocketFactory(KeyboardInterrupt()), tmp_path))
    assert result.exit_code == ExitStatus.INTERRUPTED
    assert result.stderr == "vsockctl: interrupted\n"


def test_json_errors_are_also_records(invoke: Invoke, tmp_path: Path) -> None:
    result = invoke(["--json", "info"], env=_env(FailingSocketFactory(RuntimeError("x")), tmp_path))
    assert result.exit_code == ExitStatus.ERROR
    assert '"event": "error"' in result.stdout and '"exit_status": 1' in result.stdout
