"""Importing this module registers every command on the ``vsockctl`` group."""

from __future__ import annotations

from . import (  # noqa: F401
    completion,
    connect,
    info,
    listen,
    ls,
    recv,
    send,
    sockopt,
    throughput,
)
