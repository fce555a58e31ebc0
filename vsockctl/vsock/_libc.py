"""libc calls that Python's socket module cannot make on an AF_VSOCK socket.

CPython passes every AF_VSOCK ``setsockopt`` value as 8 bytes and reads every
``getsockopt`` as 8 bytes; options of other widths (``struct timeval``, a
4-byte ``int``) and a ``sockaddr_vm`` with ``svm_flags`` set go through libc on
the socket's file descriptor instead.
"""

from __future__ import annotations

import ctypes
import os
import struct

from vsockctl.vsock.constants import AF_VSOCK

_libc = ctypes.CDLL(None, use_errno=True)

_libc.setsockopt.argtypes = [
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_uint32,
]
_libc.setsockopt.restype = ctypes.c_int
_libc.getsockopt.argtypes = [
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint32),
]
_libc.getsockopt.restype = ctypes.c_int
_libc.connect.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32]
_libc.connect.restype = ctypes.c_int
_libc.bind.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32]
_libc.bind.restype = ctypes.c_int

SOCKADDR_VM = struct.Struct("=HHIIB3x")  # family, reserved, port, cid, svm_flags, zero[3]
TIMEVAL = struct.Struct("@ll")  # struct timeval: two C longs


def _check(result: int) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def pack_sockaddr_vm(cid: int, port: int, flags: int = 0) -> bytes:
    """The 16-byte ``struct sockaddr_vm`` for ``cid``, ``port`` and ``svm_flags``."""
    return SOCKADDR_VM.pack(AF_VSOCK, 0, port, cid, flags)


def setsockopt(fd: int, level: int, name: int, value: bytes) -> None:
    _check(_libc.setsockopt(fd, level, name, value, len(value)))  # read, never written


def getsockopt(fd: int, level: int, name: int, size: int) -> bytes:
    buf = ctypes.create_string_buffer(size)
    length = ctypes.c_uint32(size)
    _check(_libc.getsockopt(fd, level, name, buf, ctypes.byref(length)))
    return buf.raw[: length.value]


def connect(fd: int, sockaddr: bytes) -> None:
    buf = ctypes.create_string_buffer(sockaddr, len(sockaddr))
    while True:
        try:
            _check(_libc.connect(fd, buf, len(sockaddr)))
            return
        except InterruptedError:
            # Python runs its signal handlers between bytecodes: Ctrl-C raises
            # KeyboardInterrupt here; any other signal just retries, as PEP 475 does.
            continue


def bind(fd: int, sockaddr: bytes) -> None:
    buf = ctypes.create_string_buffer(sockaddr, len(sockaddr))
    _check(_libc.bind(fd, buf, len(sockaddr)))
