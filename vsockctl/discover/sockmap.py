"""Whether this kernel puts a vsock socket in a BPF sockmap, found by doing it.

bpf(2) through libc's ``syscall``: BPF_MAP_CREATE of a one-entry
BPF_MAP_TYPE_SOCKMAP (which needs CAP_BPF or CAP_SYS_ADMIN), then
BPF_MAP_UPDATE_ELEM with a connected vsock socket (Linux 6.0+ takes one).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import struct

BPF_MAP_CREATE = 0
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_TYPE_SOCKMAP = 15
SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
ATTR_SIZE = 128  # union bpf_attr, zero-padded: the kernel checks that the tail is zero


def _bpf(libc: ctypes.CDLL, number: int, command: int, attr: bytes) -> int:
    buffer = ctypes.create_string_buffer(attr.ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)
    result = int(libc.syscall(number, command, buffer, ATTR_SIZE))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def try_sockmap(connected_fd: int | None) -> tuple[bool | None, str]:
    """(available, how): True or False once tried, None when it could not be tried."""
    number = SYS_BPF.get(platform.machine())
    if number is None:
        return None, f"not tried: bpf(2)'s number on {platform.machine()} is not known here"
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    try:
        map_fd = _bpf(
            libc, number, BPF_MAP_CREATE, struct.pack("=IIII", BPF_MAP_TYPE_SOCKMAP, 4, 4, 1)
        )
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        if exc.errno == errno.EPERM:
            return None, f"not tried: creating a sockmap needs CAP_BPF (bpf(2): {name})"
        return None, f"not tried: no sockmap could be created (bpf(2): {name})"
    try:
        if connected_fd is None:
            return None, (
                "not tried: a sockmap takes connected sockets, and no vsock_loopback "
                "is loaded to make one"
            )
        key, value = ctypes.c_uint32(0), ctypes.c_uint32(connected_fd)
        attr = struct.pack("=IIQQQ", map_fd, 0, ctypes.addressof(key), ctypes.addressof(value), 0)
        try:
            _bpf(libc, number, BPF_MAP_UPDATE_ELEM, attr)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            return False, f"bpf(2) BPF_MAP_UPDATE_ELEM of a vsock connection: {name}"
        return True, "bpf(2) BPF_MAP_UPDATE_ELEM of a vsock connection over CID 1: accepted"
    finally:
        os.close(map_fd)
