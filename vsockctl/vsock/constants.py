"""The vsock numbers vsockctl depends on, in one place.

Values come from ``include/uapi/linux/vm_sockets.h``; each one Python 3.11's
``socket`` module may lack is looked up there first and falls back to the
header's value.
"""

from __future__ import annotations

import socket
from typing import Final

AF_VSOCK: Final[int] = getattr(socket, "AF_VSOCK", 40)

VMADDR_CID_ANY: Final[int] = getattr(socket, "VMADDR_CID_ANY", 0xFFFFFFFF)
VMADDR_CID_HYPERVISOR: Final[int] = 0
VMADDR_CID_LOCAL: Final[int] = getattr(socket, "VMADDR_CID_LOCAL", 1)
VMADDR_CID_HOST: Final[int] = getattr(socket, "VMADDR_CID_HOST", 2)
VMADDR_PORT_ANY: Final[int] = getattr(socket, "VMADDR_PORT_ANY", 0xFFFFFFFF)
VMADDR_FLAG_TO_HOST: Final[int] = 0x01

U32_MAX: Final[int] = 0xFFFFFFFF

IOCTL_VM_SOCKETS_GET_LOCAL_CID: Final[int] = getattr(
    socket, "IOCTL_VM_SOCKETS_GET_LOCAL_CID", 0x7B9
)

# AF_VSOCK-level socket options (level = AF_VSOCK).
SO_VM_SOCKETS_BUFFER_SIZE: Final[int] = getattr(socket, "SO_VM_SOCKETS_BUFFER_SIZE", 0)
SO_VM_SOCKETS_BUFFER_MIN_SIZE: Final[int] = getattr(socket, "SO_VM_SOCKETS_BUFFER_MIN_SIZE", 1)
SO_VM_SOCKETS_BUFFER_MAX_SIZE: Final[int] = getattr(socket, "SO_VM_SOCKETS_BUFFER_MAX_SIZE", 2)
SO_VM_SOCKETS_PEER_HOST_VM_ID: Final[int] = 3
SO_VM_SOCKETS_TRUSTED: Final[int] = 5
SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD: Final[int] = getattr(
    socket, "SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD", 6
)
SO_VM_SOCKETS_NONBLOCK_TXRX: Final[int] = 7
SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW: Final[int] = getattr(
    socket, "SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW", 8
)
# On 64-bit Linux the plain name is the _OLD number; both take 16 bytes there.
SO_VM_SOCKETS_CONNECT_TIMEOUT: Final[int] = getattr(
    socket, "SO_VM_SOCKETS_CONNECT_TIMEOUT", SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD
)

# SO_ZEROCOPY (level SOL_SOCKET): MSG_ZEROCOPY sends, on vsock from Linux 6.7.
SO_ZEROCOPY: Final[int] = getattr(socket, "SO_ZEROCOPY", 60)

# Kernel defaults, for reports and tests.
DEFAULT_BUFFER_SIZE: Final[int] = 256 * 1024
DEFAULT_BUFFER_MIN_SIZE: Final[int] = 128
DEFAULT_BUFFER_MAX_SIZE: Final[int] = 256 * 1024

# sock_diag (netlink) for listing sockets.
NETLINK_SOCK_DIAG: Final[int] = 4
SOCK_DIAG_BY_FAMILY: Final[int] = 20

# Named CIDs accepted on the command line, and how a CID prints back.
CID_NAMES: Final[dict[str, int]] = {
    "any": VMADDR_CID_ANY,
    "hypervisor": VMADDR_CID_HYPERVISOR,
    "local": VMADDR_CID_LOCAL,
    "host": VMADDR_CID_HOST,
}
