"""Letting the kernel copy: sendfile(2) from a file to a socket, splice(2) from a socket.

Bytes that need not pass through Python (no digest to take) can go from the
page cache to a socket, or from a socket into a file or pipe, without a copy
into user space. Whether that is faster depends on the kernel: measured, not
assumed (see :func:`sendfile_helps` and ``Transfer.receive_stream``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import platform
import re
import stat

from vsockctl.errors import LocalIOError

SENDFILE_REFUSED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
SPLICE_REFUSED = SENDFILE_REFUSED
COPY_CHUNK = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


@functools.cache
def sendfile_helps() -> bool:
    """Whether this kernel hands ``sendfile(2)`` to a socket in batches of pages.

    Linux 6.5 moved splicing into sockets to ``sendmsg(MSG_SPLICE_PAGES)``, up to
    16 pages a call; before, vsock (which has no ``sendpage``) got each 4 KiB page
    on its own, as one small packet: slower than a plain read and send there
    (``benchmarks/kernel_copy.py``; the README keeps the figures).
    """
    numbers = re.match(r"(\d+)\.(\d+)", platform.release())
    return numbers is not None and (int(numbers[1]), int(numbers[2])) >= (6, 5)


class SpliceOut:
    """Where spliced bytes go: straight into ``fd`` when it is a pipe, else through a
    pipe of our own (splice needs a pipe at one end) and on into the file."""

    def __init__(self, fd: int, size: int, name: str) -> None:
        self.fd, self.name = fd, name
        self._outlet: int | None = None
        self._copying = False
        self.inlet = fd
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            self._outlet, self.inlet = os.pipe()
            with contextlib.suppress(OSError):  # a bigger pipe: fewer calls (may be refused)
                fcntl.fcntl(self.inlet, F_SETPIPE_SZ, size)

    def push(self, n: int) -> None:
        """Move the ``n`` bytes waiting in our pipe on into the file.

        A file splice(2) refuses to write (a file system without splice, a file
        opened for appending) gets them by read and write instead, from then on.
        """
        while self._outlet is not None and n:
            try:
                if self._copying:
                    n -= os.write(self.fd, os.read(self._outlet, min(n, COPY_CHUNK)))
                else:
                    n -= os.splice(self._outlet, self.fd, n, flags=os.SPLICE_F_MOVE)
            except OSError as exc:
                if exc.errno in SPLICE_REFUSED and not self._copying:
                    self._copying = True
                    continue
                raise LocalIOError.wrap(exc, "writing", self.name) from exc

    def close(self) -> None:
        if self._outlet is not None:
            os.close(self._outlet)
            os.close(self.inlet)
