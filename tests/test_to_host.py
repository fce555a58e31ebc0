"""VMADDR_FLAG_TO_HOST: the exact sockaddr_vm bytes, and that --to-host puts them in connect(2).

No traffic: libc's connect is replaced by a recorder that answers ECONNRESET,
so nothing leaves this machine (the VM tier sees the real call with strace).
"""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from tests.conftest import Invoke
from vsockctl.exit_status import ExitStatus
from vsockctl.vsock import _libc
from vsockctl.vsock.constants import AF_VSOCK


def test_sockaddr_vm_layout() -> None:
    raw = _libc.pack_sockaddr_vm(2, 5000, 0x01)
    assert len(raw) == 16
    assert raw == struct.pack("<HHIIB3x", AF_VSOCK, 0, 5000, 2, 1)
    assert raw.hex() == "2800" + "0000" + "88130000" + "02000000" + "01" + "000000"


@pytest.mark.parametrize(
    ("args", "flags"),
    [
        (["connect", "--to-host", "3:5000"], 1),
        (["send", "--to-host", "--to", "3:5000", "--size", "1"], 1),
        (["connect", "-z", "--to-host", "3:5000"], 1),
        (["throughput", "client", "--to-host", "3:5000"], 1),
    ],
)
def test_to_host_reaches_connect(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch, args: list[str], flags: int
) -> None:
    calls: list[bytes] = []

    def recording_connect(fd: int, sockaddr: bytes) -> None:
        with socket.socket(fileno=socket.dup(fd)) as sock:
            assert sock.family == AF_VSOCK
        calls.append(sockaddr)
        raise OSError(errno.ECONNRESET, "recorded, not sent")

    monkeypatch.setattr(_libc, "connect", recording_connect)
    result = invoke(args)
    assert result.exit_code == ExitStatus.CONNECTION_REFUSED, result.output
    assert calls and all(c == _libc.pack_sockaddr_vm(3, 5000, flags) for c in calls)


def test_to_host_and_uds_do_not_mix(invoke: Invoke) -> None:
    result = invoke(["connect", "--uds", "/nonexistent.sock", "--to-host", "5000"])
    assert result.exit_code == ExitStatus.USAGE
    assert "--to-host" in result.stderr
