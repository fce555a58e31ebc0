"""Importing this module registers every command on the ``vsockctl`` group."""

from __future__ import annotations

from . import connect, info, listen, ls, recv, send, sockopt, throughput  # noqa: F401
