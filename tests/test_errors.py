"""The errno table and the error type that keeps errno, operation and address."""

from __future__ import annotations

import errno

import pytest

from vsockctl.cli.errors import describe
from vsockctl.errors import ERRNO_MEANINGS, Operation, VsockError, explain
from vsockctl.vsock.address import VsockAddress

# Every errno the reference (vsock-reference.md) gives a vsock meaning for.
REFERENCE_ERRNOS = [
    "ECONNRESET",
    "ETIMEDOUT",
    "ENODEV",
    "ENETUNREACH",
    "EADDRNOTAVAIL",
    "EADDRINUSE",
    "EACCES",
    "ESOCKTNOSUPPORT",
    "EMSGSIZE",
    "EPIPE",
    "ENOTCONN",
    "EINVAL",
    "EAFNOSUPPORT",
]


@pytest.mark.parametrize("name", REFERENCE_ERRNOS)
def test_reference_errnos_have_a_meaning(name: str) -> None:
    err = getattr(errno, name)
    assert err in ERRNO_MEANINGS
    assert ERRNO_MEANINGS[err].name == name
    assert ERRNO_MEANINGS[err].cause


@pytest.mark.parametrize(
    ("name", "hint_fragment"),
    [
        ("ECONNRESET", "listener running"),
        ("ETIMEDOUT", "--timeout"),
        ("EADDRINUSE", "vsockctl ls"),
        ("ESOCKTNOSUPPORT", "stream"),
        ("EAFNOSUPPORT", "modprobe vsock"),
        ("EMSGSIZE", "buffer"),
    ],
)
def test_hints_say_what_to_try(name: str, hint_fragment: str) -> None:
    hint = explain(getattr(errno, name)).hint
    assert hint is not None and hint_fragment in hint


def test_unknown_errno_falls_back_to_strerror() -> None:
    meaning = explain(errno.EROFS)
    assert meaning.name == "EROFS"
    assert meaning.cause == "Read-only file system"


def test_vsock_error_keeps_its_facts() -> None:
    address = VsockAddress(3, 5000)
    exc = VsockError(errno.ECONNRESET, Operation.CONNECT, address)
    assert isinstance(exc, OSError)
    assert (exc.errno, exc.operation, exc.address) == (errno.ECONNRESET, "connect", address)
    assert str(exc) == "connect 3:5000: Connection reset by peer (ECONNRESET)"


def test_wrap_turns_a_python_timeout_into_etimedout() -> None:
    wrapped = VsockError.wrap(TimeoutError("timed out"), Operation.CONNECT, VsockAddress(1, 2))
    assert wrapped.errno == errno.ETIMEDOUT


def test_describe_is_one_line_with_meaning_and_hint() -> None:
    line = describe(VsockError(errno.EADDRINUSE, Operation.BIND, VsockAddress(1, 80)))
    assert "\n" not in line
    assert line.startswith("bind 1:80 failed: the port is already bound (EADDRINUSE)")
    assert "vsockctl ls" in line
