"""The records of ``forward``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, TypedDict

from .record import Declared


class Outcome(StrEnum):
    """How a forwarded connection ended."""

    DONE = "done"  # both ends closed their sides
    CLIENT_ERROR = "client_error"  # the client reset or vanished
    TARGET_ERROR = "target_error"  # the target reset or vanished
    STOPPED = "stopped"  # the forwarder was stopped (Ctrl-C, SIGTERM)

    @classmethod
    def broken_on(cls, end: str) -> Outcome:
        """The outcome of a connection broken on ``end`` ("client" or "target")."""
        return cls.CLIENT_ERROR if end == "client" else cls.TARGET_ERROR


class Forwarding(TypedDict):
    event: Literal["forwarding"]
    listen: Annotated[str, "where it accepts (tcp:, unix:, vsock:, uds:)"]
    target: Annotated[str, "where each connection goes"]
    max_connections: Annotated[int, "how many it relays at once"]


class Connection(TypedDict):
    """One client's connection."""

    peer: Annotated[str, "the client (tcp:HOST:PORT, vsock:CID:PORT, or the Unix listener)"]
    target: Annotated[str, "where it goes"]


class Relayed(TypedDict):
    """What went through, each way, and how long it took."""

    from_client_bytes: Annotated[int, "bytes from the client (all clients) to the target"]
    to_client_bytes: Annotated[int, "bytes from the target to the client (all clients)"]
    elapsed_ns: Annotated[int, "from open to close (start to stop)"]


class ForwardOpened(Connection):
    event: Literal["forward_opened"]


class ForwardClosed(Connection, Relayed):
    event: Literal["forward_closed"]
    outcome: Annotated[
        Outcome, "how it ended: done (both closed), client_error, target_error, or stopped"
    ]
    error: Annotated[str | None, "what failed, or null"]


class ForwardFailed(Connection):
    event: Literal["forward_failed"]
    error: Annotated[str, "why, in one line"]


class ForwardRefused(TypedDict):
    event: Literal["forward_refused"]
    peer: Annotated[str, "the client"]
    error: Annotated[str, "why: not allowed by --allow, or no file descriptors left"]


class ForwardTotals(Relayed):
    event: Literal["forward_totals"]
    connections: Annotated[int, "connections relayed"]
    failed: Annotated[int, "clients whose target could not be reached"]
    refused: Annotated[int, "clients turned away"]


DECLARED = (
    Declared(Forwarding, ("forward",), "the forwarder is up"),
    Declared(ForwardOpened, ("forward",), "a client's connection reached the target"),
    Declared(ForwardClosed, ("forward",), "a forwarded connection ended"),
    Declared(
        ForwardFailed,
        ("forward",),
        "a client's target could not be reached (the client is closed)",
    ),
    Declared(ForwardRefused, ("forward",), "a client was turned away"),
    Declared(ForwardTotals, ("forward",), "the last record when the forwarder stops"),
)
