"""The first real vsock tests: our core and real peers over CID 1, in the VM tier."""

from __future__ import annotations

import errno
import hashlib
import platform
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Invoke
from tests.peers import (
    LOCAL,
    Listener,
    connect_when_listening,
    free_port,
    pattern,
    process,
    recv_all,
)
from tests.records import json_record
from vsockctl.cli.errors import describe
from vsockctl.errors import VsockError, VsockUnavailableError
from vsockctl.exit_status import ExitStatus, exit_status_for
from vsockctl.vsock import _libc
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.constants import AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE
from vsockctl.vsock.sockets import SocketType, connect, open_socket

pytestmark = [pytest.mark.vsock, pytest.mark.kernel_features]


def test_stream_carries_several_mib_intact() -> None:
    data = pattern(6 * 1024 * 1024)
    listener = Listener()
    thread = listener.serve()
    with connect(listener.address, timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    thread.join(30)
    listener.close()
    assert listener.error is None
    assert hashlib.sha256(listener.received[0]).hexdigest() == hashlib.sha256(data).hexdigest()


def test_stream_both_directions() -> None:
    reply = pattern(1024 * 1024, seed=2)
    listener = Listener()
    thread = listener.serve(reply=reply)
    with connect(listener.address, timeout=5) as sock:
        sock.sendall(b"hello")
        sock.shutdown(socket.SHUT_WR)
        got = recv_all(sock)
    thread.join(30)
    listener.close()
    assert got == reply
    assert listener.received == [b"hello"]


def test_seqpacket_keeps_message_boundaries() -> None:
    sizes = [1, 100, 4096, 65536, 7, 200_000]
    listener = Listener(SocketType.SEQPACKET)
    thread = listener.serve(messages=True)
    with connect(listener.address, SocketType.SEQPACKET, timeout=5) as sock:
        for i, size in enumerate(sizes):
            sock.sendall(bytes([i]) * size)
    thread.join(30)
    listener.close()
    assert listener.error is None
    assert [len(m) for m in listener.received] == sizes
    assert [m[0] for m in listener.received] == list(range(len(sizes)))


def test_nothing_listening_is_refused_with_its_meaning() -> None:
    address = VsockAddress(LOCAL, free_port())
    with pytest.raises(VsockError) as info:
        connect(address, timeout=5)
    assert info.value.errno == errno.ECONNRESET
    assert exit_status_for(info.value) is ExitStatus.CONNECTION_REFUSED
    assert "nothing listens on that CID:port" in describe(info.value)


def test_datagrams_say_the_transport_has_none() -> None:
    with pytest.raises(VsockUnavailableError) as info:
        open_socket(SocketType.DGRAM)
    assert "datagrams" in str(info.value)
    assert exit_status_for(info.value) is ExitStatus.VSOCK_UNAVAILABLE


def test_default_buffer_size_is_262144_read_8_bytes_wide() -> None:
    with socket.socket(AF_VSOCK, socket.SOCK_STREAM) as sock:
        raw = _libc.getsockopt(sock.fileno(), AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, 8)
        assert len(raw) == 8 and int.from_bytes(raw, "little") == 262144
        with pytest.raises(OSError) as info:
            _libc.setsockopt(sock.fileno(), AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, b"\0\0\1\0")
        assert info.value.errno == errno.EINVAL


def test_info_in_the_vm_reports_loopback_and_diag(invoke: Invoke) -> None:
    record = json_record(invoke(["info", "--json"]).stdout)
    assert record["loopback"] is True and record["diag_loaded"] is True
    assert record["available"] is True
    assert not any("loopback" in note for note in record["notes"])


def test_socat_to_us_and_back(tmp_path: Path) -> None:
    data = pattern(2 * 1024 * 1024, seed=3)
    # socat connects to our listener and writes a file's bytes.
    listener = Listener()
    thread = listener.serve()
    result = subprocess.run(
        ["socat", "-u", "-", f"VSOCK-CONNECT:{LOCAL}:{listener.address.port}"],
        input=data,
        capture_output=True,
        timeout=60,
    )
    thread.join(30)
    listener.close()
    assert result.returncode == 0, result.stderr
    assert listener.received == [data]

    # socat listens and writes what we send to its stdout.
    port = free_port()
    out = tmp_path / "from-us"
    with (
        out.open("wb") as sink,
        process(["socat", "-u", f"VSOCK-LISTEN:{port}", "-"], stdout=sink) as proc,
    ):
        with connect_when_listening(VsockAddress(LOCAL, port)) as sock:
            sock.sendall(data)
        assert proc.wait(timeout=60) == 0
    assert out.read_bytes() == data


def kernel_release() -> tuple[int, int]:
    """The running kernel's major.minor (the test's prediction only: the product tries)."""
    major, minor = platform.release().split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()))


def test_info_finds_the_features_the_reference_predicts(invoke: Invoke) -> None:
    """Each feature was tried by info; the reference says when each came: sockmap 6.4,
    MSG_ZEROCOPY 6.7, SIOCOUTQ 6.12, SIOCINQ 6.17, network namespaces 7.0 (6.1 and
    6.12 here)."""
    result = invoke(["info", "--json"])
    record = json_record(result.stdout)
    features = {f["name"]: f["available"] for f in record["features"]}
    release = kernel_release()
    assert features == {
        "seqpacket": True,
        "msg_zerocopy": release >= (6, 7),
        "siocoutq": release >= (6, 12),
        "siocinq": release >= (6, 17),
        "sockmap": release >= (6, 4),
        "netns": release >= (7, 0),
    }, [f["how"] for f in record["features"]]
    # the sysctls of namespaces came with them; each known one is explained
    sysctls = {s["name"]: s["meaning"] for s in record["sysctls"]}
    if release >= (7, 0):
        assert list(sysctls)[:3] == ["ns_mode", "child_ns_mode", "g2h_fallback"], sysctls
        assert all(sysctls.values()), sysctls
    else:
        assert sysctls == {}
