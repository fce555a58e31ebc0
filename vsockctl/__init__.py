"""vsockctl: see, test and measure vsock (AF_VSOCK) between guests and hosts.

The package root is the library: it imports neither click nor rich, so a
script can ``from vsockctl import connect, parse_address``.
"""

from __future__ import annotations

from vsockctl.discover.system import SystemInfo, probe
from vsockctl.errors import (
    DataMismatchError,
    ProtocolError,
    VsockError,
    VsockUnavailableError,
    explain,
)
from vsockctl.exit_status import ExitStatus
from vsockctl.vsock.address import AddressError, VsockAddress, parse_address, parse_cid, parse_port
from vsockctl.vsock.sockets import SocketType, accept, connect, connect_with_retry, listen


def __getattr__(name: str) -> str:
    """``__version__``, read from the package metadata on first use (importlib.metadata is slow)."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("vsockctl")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    raise AttributeError(f"module 'vsockctl' has no attribute {name!r}")


__all__ = [
    "AddressError",
    "DataMismatchError",
    "ExitStatus",
    "ProtocolError",
    "SocketType",
    "SystemInfo",
    "VsockAddress",
    "VsockError",
    "VsockUnavailableError",
    "__version__",
    "accept",
    "connect",
    "connect_with_retry",
    "explain",
    "listen",
    "parse_address",
    "parse_cid",
    "parse_port",
    "probe",
]
