"""sock_diag replies parsed from bytes laid out as the kernel sends them; ls without vsock_diag."""

from __future__ import annotations

import errno
import socket
import struct
from pathlib import Path

import pytest

from tests.conftest import Invoke
from vsockctl.discover.diag import (
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_HEADER,
    VSOCK_DIAG_MSG,
    VsockSocket,
    _request,
    parse_messages,
    socket_owners,
)
from vsockctl.discover.kmod import load_hint, module_state
from vsockctl.errors import VsockError, VsockUnavailableError
from vsockctl.exit_status import ExitStatus
from vsockctl.vsock.constants import AF_VSOCK, SOCK_DIAG_BY_FAMILY


def message(kind: int, body: bytes, seq: int = 1) -> bytes:
    length = NLMSG_HEADER.size + len(body)
    padding = b"\0" * (-length % 4)
    return NLMSG_HEADER.pack(length, kind, 2, seq, 0) + body + padding


def record(
    kind: int, state: int, shutdown: int, src: tuple[int, int], dst: tuple[int, int]
) -> bytes:
    return VSOCK_DIAG_MSG.pack(AF_VSOCK, kind, state, shutdown, *src, *dst, 4242, 7, 1)


def test_request_layout_matches_vsock_diag_req() -> None:
    data = _request(9)
    length, kind, flags, seq, _ = NLMSG_HEADER.unpack_from(data)
    assert (length, kind, flags, seq) == (16 + 24, SOCK_DIAG_BY_FAMILY, 0x301, 9)
    family, protocol, _, states, ino, show, c0, c1 = struct.unpack_from("=BBHIII2I", data, 16)
    assert (family, protocol, states, ino, show, c0, c1) == (40, 0, 0xFFFFFFFF, 0, 0, 0, 0)


def test_records_are_parsed_until_done() -> None:
    data = message(
        SOCK_DIAG_BY_FAMILY, record(socket.SOCK_SEQPACKET, 1, 2, (1, 5000), (1, 40000))
    ) + message(SOCK_DIAG_BY_FAMILY, record(socket.SOCK_STREAM, 10, 0, (0xFFFFFFFF, 22), (0, 0)))
    sockets, done = parse_messages(data, 1)
    assert not done
    first, second = sockets
    assert isinstance(first, VsockSocket)
    assert (first.type_name, first.state_name, first.shutdown_name) == (
        "seqpacket",
        "established",
        "wr",
    )
    assert (str(first.local), str(first.peer), first.inode) == ("1:5000", "1:40000", 4242)
    assert first.cookie == 7 | (1 << 32)
    assert second.listening and str(second.local) == "any:22"
    assert parse_messages(message(NLMSG_DONE, struct.pack("=i", 0)), 1) == ([], True)


def test_no_vsock_diag_is_unavailable_with_the_hint() -> None:
    with pytest.raises(VsockUnavailableError) as info:
        parse_messages(message(NLMSG_ERROR, struct.pack("=i", -errno.ENOENT) + bytes(16)), 1)
    assert info.value.hint is not None and "vsock_diag" in info.value.hint
    assert info.value.hint.startswith(load_hint("vsock_diag", module_state("vsock_diag")))


def test_other_netlink_errors_keep_their_errno() -> None:
    with pytest.raises(VsockError) as info:
        parse_messages(message(NLMSG_ERROR, struct.pack("=i", -errno.EPERM) + bytes(16)), 1)
    assert info.value.errno == errno.EPERM


def test_messages_of_another_request_are_ignored() -> None:
    data = message(NLMSG_DONE, struct.pack("=i", 0), seq=5)
    assert parse_messages(data, 1) == ([], False)


def test_owners_found_through_proc_fd(tmp_path: Path) -> None:
    a, b = socket.socketpair()
    with a, b:
        inode = Path(f"/proc/self/fd/{a.fileno()}").readlink().name
        number = int(str(inode)[8:-1])
        owners = socket_owners()
    assert any(o.name for o in owners[number])
    # A process whose fd directory cannot be read (gone, or another user's)
    # gives no owners, not an error.
    (tmp_path / "123").mkdir()
    (tmp_path / "456" / "fd").mkdir(parents=True)
    (tmp_path / "456" / "fd" / "3").symlink_to("socket:[99]")
    owners = socket_owners(tmp_path)
    assert list(owners) == [99] and owners[99][0].pid == 456


@pytest.mark.skipif(
    Path("/sys/module/vsock_diag").exists(), reason="vsock_diag is loaded on this machine"
)
def test_ls_without_vsock_diag_exits_3_with_hint(invoke: Invoke) -> None:
    result = invoke(["ls"])
    assert result.exit_code == ExitStatus.VSOCK_UNAVAILABLE
    assert result.stderr.count("\n") == 1
    hint = load_hint("vsock_diag", module_state("vsock_diag"))  # true of this kernel
    assert f"vsock_diag is not loaded; {hint}" in result.stderr
