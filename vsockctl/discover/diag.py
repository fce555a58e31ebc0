"""The vsock sockets on this machine, from the kernel's sock_diag netlink interface.

What ``ss --vsock`` asks the kernel, in the standard library: one
``SOCK_DIAG_BY_FAMILY`` dump request for AF_VSOCK over ``NETLINK_SOCK_DIAG``,
answered by ``struct vsock_diag_msg`` records (``vm_sockets_diag.h``). The
kernel dumps listening sockets and connected ones; sockets that are only
created or bound are not in its tables. Owners come from ``/proc/<pid>/fd``.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vsockctl.discover.kmod import ModuleState, load_hint, module_state
from vsockctl.errors import Operation, VsockError, VsockUnavailableError
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.constants import AF_VSOCK, NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY
from vsockctl.vsock.sockets import SocketFactory, SocketType

NLMSG_HEADER = struct.Struct("=IHHII")  # len, type, flags, seq, pid
VSOCK_DIAG_REQ = struct.Struct("=BBHIII2I")  # family, protocol, pad, states, ino, show, cookie
VSOCK_DIAG_MSG = struct.Struct("=BBBBIIIII2I")
MIN_SOCKET_MESSAGE = NLMSG_HEADER.size + VSOCK_DIAG_MSG.size

NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3

# The TCP state numbers vsock reuses (include/net/tcp_states.h).
STATES = {
    1: "established",
    2: "syn-sent",
    3: "syn-recv",
    4: "fin-wait1",
    5: "fin-wait2",
    6: "time-wait",
    7: "close",
    8: "close-wait",
    9: "last-ack",
    10: "listen",
    11: "closing",
}
STATE_LISTEN = 10
RCV_SHUTDOWN, SEND_SHUTDOWN = 1, 2


def diag_hint() -> str:
    """How to get vsock_diag on this kernel, or why it cannot be had."""
    state = module_state("vsock_diag")
    hint = load_hint("vsock_diag", state)
    return f"{hint}, then try again" if state is ModuleState.LOADABLE else hint


@dataclass(frozen=True)
class Owner:
    """A process holding a socket; name None when it could not be inspected."""

    pid: int
    name: str | None


@dataclass(frozen=True)
class VsockSocket:
    """One socket from the kernel's dump."""

    type_number: int  # SOCK_STREAM, SOCK_SEQPACKET, SOCK_DGRAM
    state: int
    shutdown: int
    local: VsockAddress
    peer: VsockAddress
    inode: int
    cookie: int
    owners: tuple[Owner, ...] = field(default=())

    @property
    def type_name(self) -> str:
        sock_type = SocketType.from_number(self.type_number)
        return sock_type.value if sock_type is not None else f"type {self.type_number}"

    @property
    def state_name(self) -> str:
        return STATES.get(self.state, f"state {self.state}")

    @property
    def listening(self) -> bool:
        return self.state == STATE_LISTEN

    @property
    def shutdown_name(self) -> str:
        """``-`` (open), ``rd`` (no more receiving), ``wr`` (no more sending) or ``rdwr``."""
        parts = [
            n for bit, n in ((RCV_SHUTDOWN, "rd"), (SEND_SHUTDOWN, "wr")) if self.shutdown & bit
        ]
        return "".join(parts) or "-"


def _request(seq: int) -> bytes:
    body = VSOCK_DIAG_REQ.pack(AF_VSOCK, 0, 0, 0xFFFFFFFF, 0, 0, 0, 0)
    header = NLMSG_HEADER.pack(
        NLMSG_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
    )
    return header + body


def parse_messages(data: bytes, seq: int) -> tuple[list[VsockSocket], bool]:
    """The sockets in one netlink read, and whether the dump is done.

    Raises :class:`VsockUnavailableError` when the kernel has no vsock_diag
    (``ENOENT``), :class:`VsockError` for any other error reply.
    """
    sockets: list[VsockSocket] = []
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, msg_type, _, msg_seq, _ = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size:
            raise VsockError(
                errno.EPROTO, Operation.SOCK_DIAG, None, f"netlink message of {length} bytes"
            )
        body = offset + NLMSG_HEADER.size
        if msg_seq == seq:
            if msg_type == NLMSG_DONE:
                return sockets, True
            if msg_type == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, body)
                if err == -errno.ENOENT:
                    raise VsockUnavailableError(
                        "the kernel cannot list vsock sockets: vsock_diag is not loaded",
                        diag_hint(),
                    )
                if err:
                    raise VsockError(-err, Operation.SOCK_DIAG)
            elif msg_type == SOCK_DIAG_BY_FAMILY and length >= MIN_SOCKET_MESSAGE:
                sockets.append(_parse_socket(data, body))
        offset += (length + 3) & ~3
    return sockets, False


def _parse_socket(data: bytes, offset: int) -> VsockSocket:
    (_, type_number, state, shutdown, src_cid, src_port, dst_cid, dst_port, inode, c0, c1) = (
        VSOCK_DIAG_MSG.unpack_from(data, offset)
    )
    return VsockSocket(
        type_number,
        state,
        shutdown,
        VsockAddress(src_cid, src_port),
        VsockAddress(dst_cid, dst_port),
        inode,
        c0 | (c1 << 32),
    )


def dump(factory: SocketFactory = socket.socket) -> list[VsockSocket]:
    """Every vsock socket the kernel's diag tables hold (listening and connected)."""
    try:
        nl = factory(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    except OSError as exc:
        raise VsockUnavailableError(
            f"cannot open a sock_diag netlink socket: {exc.strerror}"
        ) from exc
    seq = 1
    result: list[VsockSocket] = []
    with nl:
        nl.sendall(_request(seq))
        while True:
            data = nl.recv(65536)
            if not data:
                break
            sockets, done = parse_messages(data, seq)
            result.extend(sockets)
            if done:
                break
    return result


def socket_owners(proc: Path = Path("/proc")) -> dict[int, list[Owner]]:
    """inode -> the processes with a descriptor on ``socket:[inode]``.

    Processes whose descriptors cannot be read (another user's, without root)
    are skipped: their sockets show with unknown owners.
    """
    owners: dict[int, list[Owner]] = {}
    for entry in _pids(proc):
        fd_dir = proc / str(entry) / "fd"
        try:
            links = os.listdir(fd_dir)
        except OSError:
            continue
        inodes: set[int] = set()
        for fd in links:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
        if inodes:
            owner = Owner(entry, _process_name(entry))
            for inode in inodes:
                owners.setdefault(inode, []).append(owner)
    return owners


def _pids(proc: Path) -> Iterator[int]:
    try:
        names = os.listdir(proc)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def _process_name(pid: int) -> str | None:
    import psutil  # imported on first use: it is slow to load

    try:
        return psutil.Process(pid).name()
    except (psutil.Error, OSError):
        return None


def with_owners(sockets: Iterable[VsockSocket], proc: Path = Path("/proc")) -> list[VsockSocket]:
    owners = socket_owners(proc)
    return [
        VsockSocket(
            s.type_number,
            s.state,
            s.shutdown,
            s.local,
            s.peer,
            s.inode,
            s.cookie,
            tuple(owners.get(s.inode, ())),
        )
        for s in sockets
    ]
