"""Other network namespaces' vsock, seen from a thread that joins each (setns(2)).

A network namespace is per thread in Linux: a thread that joins one makes its
sockets there and reads that namespace's ``/proc/sys/net``, while the rest of
the process stays where it was. vsockctl uses that to find a listener that
runs in another namespace (``doctor``), which needs CAP_SYS_ADMIN; without it
nothing is found and the caller says it could not look.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .sysctl import namespace_mode

CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


@dataclass(frozen=True)
class Namespace:
    """A network namespace other than ours, and a process that lives in it."""

    inode: int
    pid: int
    process: str
    mode: str | None  # its vsock mode (global/local), None before Linux 7


def own_inode(proc: Path = Path("/proc")) -> int:
    return os.stat(proc / "self/ns/net").st_ino


def others(proc: Path = Path("/proc")) -> Iterator[tuple[int, int]]:
    """(inode, pid): one process per network namespace other than ours."""
    seen = {own_inode(proc)}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            inode = os.stat(entry / "ns/net").st_ino
        except OSError:  # gone, or not ours to look at
            continue
        if inode not in seen:
            seen.add(inode)
            yield inode, int(entry.name)


def run_in(pid: int, work: Callable[[], T]) -> T:
    """``work()`` on a thread inside ``pid``'s network namespace; OSError when it
    cannot join (no CAP_SYS_ADMIN, the process gone)."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def joined() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            outcome.append(work())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=joined, name=f"netns-{pid}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def find(
    look: Callable[[], T | None], proc: Path = Path("/proc")
) -> tuple[list[tuple[Namespace, T]], bool]:
    """What ``look()`` (run inside each other namespace) found there, where it found
    something, and whether every namespace could be looked into."""
    found: list[tuple[Namespace, T]] = []
    complete = True
    for inode, pid in others(proc):
        try:
            hit, mode = run_in(pid, lambda: (look(), namespace_mode()))
        except OSError:
            complete = False
            continue
        if hit is not None:
            found.append((Namespace(inode, pid, _comm(proc, pid), mode), hit))
    return found, complete


def _comm(proc: Path, pid: int) -> str:
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"
