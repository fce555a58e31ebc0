"""Reading a vsockmon link: an AF_PACKET socket, kernel timestamps, a snap length, drop counts.

The socket takes each frame's first ``snaplen`` bytes only: a one-instruction
classic BPF program (``ret #snaplen``, what tcpdump's ``-s`` attaches) trims
frames before they are queued, so a 64 KiB RW packet costs its headers'
worth of the receive buffer when only the headers are wanted. The kernel
counts what it could not queue (``PACKET_STATISTICS``), and the capture says so.

Ctrl-C or SIGTERM (inside :func:`vsockctl.signals.stop_after_loop`) ends the
reading once the frames the kernel queued before the signal are read: a
capture that lags behind a burst still gets them.
"""

from __future__ import annotations

import ctypes
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator

from vsockctl.signals import stop_pending

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_TIMESTAMPNS = 35  # SCM_TIMESTAMPNS is the same number
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
PACKET_AUXDATA = 8  # each frame's length before the snap length cut it
_AUXDATA = struct.Struct("=III")  # tp_status, tp_len, tp_snaplen (then mac, net, vlan)
STOP_CHECK = 0.2  # seconds between looks for a stop signal while idle
RECEIVE_BUFFER = 64 << 20  # a ceiling, used only while the reader lags
_BPF_RET_K = 0x06
TRUNC = socket.MSG_TRUNC  # the length as queued, however much of it the buffer took
_TIMESPEC = struct.Struct("=qq")


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (
        ("len", ctypes.c_uint16),
        ("filter", ctypes.POINTER(_SockFilter)),
    )


def _attach_snaplen(sock: socket.socket, snaplen: int) -> None:
    program = (_SockFilter * 1)(_SockFilter(_BPF_RET_K, 0, 0, snaplen))
    fprog = _SockFprog(1, ctypes.cast(program, ctypes.POINTER(_SockFilter)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(memoryview(fprog)))


class LiveCapture:
    """Frames from ``interface`` as ``(time_ns, data, frame_bytes)``; ``data`` is reused.

    ``into`` gives the buffer for each frame (a pcap writer's slot), else the capture's own.
    """

    def __init__(self, interface: str, snaplen: int) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
            _attach_snaplen(self.sock, snaplen)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            self.sock.bind((interface, ETH_P_ALL))
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        self.buffer = bytearray(snaplen)
        self.view = memoryview(self.buffer)
        self.kernel_packets = 0  # what the kernel counted: queued to us, and dropped
        self.kernel_drops = 0

    def frames(
        self,
        until: float | None,
        on_idle: Callable[[], None],
        into: Callable[[], memoryview] | None = None,
    ) -> Iterator[tuple[int, memoryview, int]]:
        """Frames until ``until`` (``time.monotonic()``) or for ever; ``on_idle()`` first."""
        ancillary = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(32)
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        cutoff: int | None = None  # once asked to stop: the frames from before then
        while True:
            if cutoff is None and stop_pending():
                cutoff = time.time_ns()
            target = self.view if into is None else into()  # a pcap writer's, to copy once
            try:
                size, cmsgs, _, _ = self.sock.recvmsg_into([target], ancillary, TRUNC)
            except BlockingIOError:
                on_idle()
                left = None if until is None else until - time.monotonic()
                if cutoff is not None or (left is not None and left <= 0):
                    return
                wait = STOP_CHECK if left is None else min(left, STOP_CHECK)
                poller.poll(max(int(wait * 1000), 1))
                continue
            when, length = time.time_ns(), size
            for level, kind, data in cmsgs:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                    when = seconds * 1_000_000_000 + nanoseconds
                elif level == SOL_PACKET and kind == PACKET_AUXDATA:
                    length = _AUXDATA.unpack_from(data)[1]
            if cutoff is not None and when > cutoff:
                return
            yield when, target[: min(size, len(target))], length
            if until is not None and time.monotonic() >= until:
                return

    def count(self) -> tuple[int, int]:
        """Frames the kernel saw for this socket and those it dropped, so far."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("=II", raw)  # reading resets them: add up
        self.kernel_packets += packets
        self.kernel_drops += drops
        return self.kernel_packets, self.kernel_drops

    def close(self) -> None:
        self.sock.close()
