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


class ForwardOpened(TypedDict):
    event: Literal["forward_opened"]
    peer: Annotated[str, "the client (tcp:HOST:PORT, vsock:CID:PORT, or the Unix listener)"]
    target: Annotated[str, "where it goes"]


class ForwardClosed(TypedDict):
    event: Literal["forward_closed"]
    peer: Annotated[str, "the client"]
    target: Annotated[str, "where it went"]
    from_client_bytes: Annotated[int, "bytes relayed from the client to the target"]
    to_client_bytes: Annotated[int, "bytes relayed from the target to the client"]
    elapsed_ns: Annotated[int, "from open to close"]
    outcome: Annotated[
        Outcome, "how it ended: done (both closed), client_error, target_error, or stopped"
    ]
    error: Annotated[str | None, "what failed, or null"]


class ForwardFailed(TypedDict):
    event: Literal["forward_failed"]
    peer: Annotated[str, "the client"]
    target: Annotated[str, "the target"]
    error: Annotated[str, "why, in one line"]


class ForwardRefused(TypedDict):
    event: Literal["forward_refused"]
    peer: Annotated[str, "the client"]
    error: Annotated[str, "why: not allowed by --allow, or no file descriptors left"]


class ForwardTotals(TypedDict):
    event: Literal["forward_totals"]
    connections: Annotated[int, "connections relayed"]
    failed: Annotated[int, "clients whose target could not be reached"]
    refused: Annotated[int, "clients turned away"]
    from_client_bytes: Annotated[int, "bytes from clients to the target, all told"]
    to_client_bytes: Annotated[int, "bytes from the target to clients, all told"]
    elapsed_ns: Annotated[int, "how long the forwarder ran"]


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
