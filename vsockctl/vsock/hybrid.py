"""The host side of Firecracker / Cloud Hypervisor "hybrid vsock".

These VMMs expose a guest's vsock device on the host as a Unix socket
(``uds_path``), not through ``vhost_vsock``:

- host to guest: connect to ``uds_path``, write ``CONNECT <port>\\n``, read
  ``OK <host_port>\\n``; from then on the Unix socket carries the stream. When
  nothing listens on that port in the guest, the VMM closes the connection
  instead of answering.
- guest to host: a guest connecting to CID 2 port P reaches the program
  listening on the Unix socket ``<uds_path>_<P>``.

Streams only. The sockets returned are plain Python sockets that the data
path treats exactly like vsock ones, but for one thing: **a host-side
half-close is a full close.** When the host end shuts down its writing side,
Firecracker, vhost-device-vsock 0.3 and Cloud Hypervisor before v53 send the
guest ``SHUTDOWN`` with both flags (receive and send), so the guest can no
longer answer (its writes fail with EPIPE); Cloud Hypervisor v53 and later pass
a half-close on as one. So vsockctl does not half-close such a connection when
its own input ends: it goes on reading until the peer closes, or until the peer
has sent nothing for :data:`MUX_LINGER` seconds, and only then shuts its side
down (:func:`linger`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from vsockctl.errors import (
    LocalIOError,
    Operation,
    ProtocolError,
    VsockError,
    VsockUnavailableError,
)
from vsockctl.vsock.address import UnixEndpoint

MUX_LINGER = 2.0  # seconds a mux peer may stay silent after our input ended
CLOSE_WAIT = 0.5  # seconds a guest's send waits in silence for its receiver's close

# What each hybrid VMM's mux does with a half-close, read from its source (for the
# man pages): (VMM, the host end shuts down writing, the guest end does).
HALF_CLOSE_BY_VMM: tuple[tuple[str, str, str], ...] = (
    ("Firecracker", "the guest gets SHUTDOWN with both flags: it can no longer send",
     "ignored: the host program never sees the end of the stream"),
    ("Cloud Hypervisor before v53", "as Firecracker", "ignored, as Firecracker"),
    ("Cloud Hypervisor v53 and later", "a half-close (SHUTDOWN send flag only)",
     "the host program reads the end of the stream"),
    ("vhost-device-vsock 0.3 (rust-vmm)", "as Firecracker", "ignored, as Firecracker"),
)  # fmt: skip
MUX_MAN_SECTION = f"""\
On the host, a hybrid vsock connection (--uds, uds:, vsock-mux/) is a Unix socket
to the VMM's mux, and most muxes turn a half-close into a full close. So when its
own input ends, vsockctl (connect, listen --uds, forward to uds:) does not shut
its side down at once: it reads on until the guest closes, or until the guest has
sent nothing for {MUX_LINGER:.0f} s, and then shuts down. A guest service that
answers only after the end of its input cannot answer through such a mux at all.
In the guest, a send to CID 2 stops waiting for the receiver's close after
{CLOSE_WAIT} s of silence and closes, because the guest's half-close may never
reach the host program.
"""

REPLY_MAX = 64  # "OK 4294967295\n" is 14 bytes; anything much longer is not a VMM talking
_OK = re.compile(rb"^OK (\d{1,10})\n$")


def linger(
    received: Callable[[], int], ended: Callable[[], bool], seconds: float = MUX_LINGER
) -> None:
    """Wait until the peer's direction has ``ended``, or ``received`` has not grown for
    ``seconds``: the moment to shut down a connection whose mux cannot half-close."""
    last, quiet_since = received(), time.monotonic()
    while not ended():
        time.sleep(0.05)
        now, moved = time.monotonic(), received()
        if moved != last:
            last, quiet_since = moved, now
        elif now - quiet_since >= seconds:
            return


def listener_path(uds_path: str, port: int) -> str:
    """Where the VMM looks for a host listener on ``port``: ``<uds_path>_<port>``."""
    return f"{uds_path}_{port}"


def _read_reply(sock: socket.socket) -> bytes:
    """One line, a byte at a time, so nothing after the newline is consumed."""
    data = bytearray()
    while len(data) < REPLY_MAX:
        byte = sock.recv(1)
        if not byte:
            return bytes(data)
        data += byte
        if byte == b"\n":
            return bytes(data)
    raise ProtocolError(
        f"the VMM's reply to CONNECT is over {REPLY_MAX} bytes without a newline: "
        f"{_shown(bytes(data)[:32])}..."
    )


def _shown(reply: bytes) -> str:
    """A VMM's reply as text in quotes, its line end dropped and odd bytes escaped."""
    return repr(reply.decode("utf-8", errors="backslashreplace").removesuffix("\n"))


def connect_hybrid(path: str, port: int, timeout: float | None = None) -> socket.socket:
    """A stream to guest ``port`` through the VMM's Unix socket at ``path``.

    Raises VsockError ECONNRESET when the VMM closes without ``OK`` (nothing
    listens in the guest), ETIMEDOUT when it says nothing within ``timeout``,
    ProtocolError for a malformed reply, VsockUnavailableError when there is
    no socket at ``path``.
    """
    endpoint = UnixEndpoint(path, port)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise VsockUnavailableError(
                f"there is no hybrid vsock socket at {path}",
                "is the VM running, and is this the uds_path given to the VMM?",
            ) from exc
        except TimeoutError as exc:
            raise VsockError(errno.ETIMEDOUT, Operation.CONNECT, endpoint) from exc
        except OSError as exc:
            # Linux answers ECONNREFUSED both for a file that is no socket and for a
            # socket nobody accepts on: either way no VMM is there (a guest port that
            # refuses shows later, as a close without OK).
            if exc.errno in (errno.ECONNREFUSED, errno.ENOTSOCK):
                raise _no_vmm(path) from exc
            raise VsockError.wrap(exc, Operation.CONNECT, endpoint) from exc
        try:
            sock.sendall(f"CONNECT {port}\n".encode())
            reply = _read_reply(sock)
        except TimeoutError as exc:
            raise VsockError(
                errno.ETIMEDOUT, Operation.HANDSHAKE, endpoint, "no reply to CONNECT in time"
            ) from exc
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                reply = b""
            else:
                raise VsockError.wrap(exc, Operation.HANDSHAKE, endpoint) from exc
        if not reply:
            raise VsockError(
                errno.ECONNRESET, Operation.CONNECT, endpoint, "the VMM closed without OK"
            )
        if not _OK.match(reply):
            if not reply.endswith(b"\n"):
                raise ProtocolError(
                    f"the VMM closed in the middle of its reply to CONNECT {port}: {_shown(reply)}"
                )
            raise ProtocolError(
                f"unexpected reply to CONNECT {port} from {path}: {_shown(reply)} "
                "(expected 'OK <port>')"
            )
        sock.settimeout(None)
        return sock
    except BaseException:
        sock.close()
        raise


def _no_vmm(path: str) -> VsockUnavailableError:
    """Why nothing answered at ``path``: not a socket at all, or a socket no VMM serves."""
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        is_socket = False
    if not is_socket:
        return VsockUnavailableError(f"{path} is not a Unix socket", "give the VMM's uds_path")
    return VsockUnavailableError(
        f"nothing accepts on {path}", "is the VM running? a VMM that exited leaves its socket"
    )


def _stale(path: str) -> bool:
    """Whether the socket file at ``path`` has nobody accepting on it."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return True
        except OSError:
            return False
        return False


@contextlib.contextmanager
def hybrid_listener(
    uds_path: str, port: int, backlog: int = socket.SOMAXCONN
) -> Iterator[socket.socket]:
    """Listen on ``<uds_path>_<port>`` for connections a guest opens to CID 2 ``port``.

    As :func:`unix_listener`: stale sockets replaced, live ones EADDRINUSE, other
    files left alone, the socket file removed on exit.
    """
    with unix_listener(
        listener_path(uds_path, port), backlog, UnixEndpoint(uds_path, port)
    ) as sock:
        yield sock


@contextlib.contextmanager
def unix_listener(
    path: str, backlog: int = socket.SOMAXCONN, endpoint: UnixEndpoint | None = None
) -> Iterator[socket.socket]:
    """A stream socket listening at ``path``, which names it in errors (or ``endpoint``,
    a hybrid listener's vsock port).

    A stale socket file (nobody accepting) is replaced; a live one is
    EADDRINUSE; a file that is not a socket is left alone and refused. The
    socket file is removed on exit, if it is still ours.
    """
    target = None if endpoint is not None else f"unix:{path}"
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if not stat.S_ISSOCK(mode):
            raise LocalIOError(
                errno.EEXIST,
                "listening on",
                path,
                "it exists and is not a socket; not replacing it",
            )
        if not _stale(path):
            raise VsockError(
                errno.EADDRINUSE,
                Operation.LISTEN,
                endpoint,
                "another program listens there",
                target=target,
            )
        os.unlink(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EACCES, errno.EROFS, errno.ENOTDIR):
                raise LocalIOError.wrap(exc, "listening on", path) from exc
            raise VsockError(
                exc.errno or errno.EIO, Operation.LISTEN, endpoint, target=target
            ) from exc
        inode = os.stat(path).st_ino
        try:
            sock.listen(backlog)
            yield sock
        finally:
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == inode:  # not replaced by someone else meanwhile
                    os.unlink(path)


@dataclass(frozen=True)
class UdsState:
    """What :func:`check_uds` found at a path."""

    path: str
    exists: bool = False
    socket: bool = False
    accepting: bool = False
    port: int | None = None  # the port asked about, when one was and the socket accepts
    port_failure: VsockError | ProtocolError | VsockUnavailableError | None = None


def check_uds(path: str, port: int | None = None, timeout: float = 2.0) -> UdsState:
    """Is ``path`` a live hybrid vsock socket? With ``port``, does CONNECT get an OK?"""
    if not os.path.lexists(path):
        return UdsState(path)
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        return UdsState(path, exists=True)
    if _stale(path):
        return UdsState(path, exists=True, socket=True)
    if port is None:
        return UdsState(path, exists=True, socket=True, accepting=True)
    try:
        connect_hybrid(path, port, timeout).close()
    except (VsockError, ProtocolError, VsockUnavailableError) as exc:
        return UdsState(path, True, True, True, port, exc)
    return UdsState(path, True, True, True, port)
