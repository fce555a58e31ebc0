"""Test doubles, named as such: things that cannot exist on the test machine.

``FailingSocketFactory`` stands for a kernel whose ``socket(AF_VSOCK, ...)``
fails (no AF_VSOCK at all, say), which the development machines cannot be.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from vsockctl.discover.system import ProbePaths


class FailingSocketFactory:
    """A socket factory that raises ``exc`` for AF_VSOCK and makes real sockets otherwise."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0

    def __call__(self, family: int = -1, type: int = -1, *args: Any) -> socket.socket:
        if family == socket.AF_VSOCK:
            self.calls += 1
            raise self.exc
        return socket.socket(family, type, *args)


def errno_factory(err: int) -> FailingSocketFactory:
    return FailingSocketFactory(OSError(err, os.strerror(err)))


def empty_machine(root: Path) -> ProbePaths:
    """A /sys, /dev and /proc with no vsock in them."""
    for name in ("sys/module", "dev", "proc"):
        (root / name).mkdir(parents=True, exist_ok=True)
    return ProbePaths(sys=root / "sys", dev=root / "dev", proc=root / "proc")
