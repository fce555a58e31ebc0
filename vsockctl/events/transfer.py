"""The records of ``send``, ``recv``, ``listen`` and ``connect``, and the ``error`` record."""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired, TypedDict

from .record import Declared

TRANSFER = ("send", "recv", "listen", "connect")


class Listening(TypedDict):
    event: Literal["listening"]
    address: Annotated[str, "CID:PORT it is bound to"]
    cid: Annotated[int, "the bound CID"]
    port: Annotated[int, "the bound port (the kernel's pick with --port any)"]
    local_cid: Annotated[int | None, "this machine's CID, or null when unknown"]


class Stalled(TypedDict):
    event: Literal["stalled"]
    waited_ns: Annotated[int, "how long the send under way has blocked"]
    sent_bytes: Annotated[int, "bytes sent before it"]
    hint: Annotated[str, "the likely causes, and what to try"]


class Ends(TypedDict):
    """Both ends of a connection."""

    peer: Annotated[str, "the peer: CID:PORT, or the hybrid socket"]
    local: Annotated[str, "our end"]


class Connected(Ends):
    event: Literal["connected"]


class Accepted(Ends):
    event: Literal["accepted"]


class Moved(TypedDict):
    """What a transfer moved (``TransferStats.to_record``)."""

    sent_bytes: Annotated[int, "bytes sent"]
    received_bytes: Annotated[int, "bytes received"]
    elapsed_ns: Annotated[int, "from the start of the transfer to its end"]
    bytes_per_second: Annotated[int, "(sent + received) / elapsed time"]
    sent_sha256: Annotated[str | None, "SHA-256 of what was sent (with --sha256), else null"]
    received_sha256: Annotated[
        str | None, "SHA-256 of what was received (with --sha256), else null"
    ]
    sent_messages: NotRequired[Annotated[int, "seqpacket only: messages sent"]]
    received_messages: NotRequired[Annotated[int, "seqpacket only: messages received"]]
    truncated_messages: NotRequired[
        Annotated[int, "seqpacket only: messages longer than the buffer (cut, counted)"]
    ]
    message_sizes: NotRequired[
        Annotated[dict[str, int], "seqpacket only: {size: count} of the messages received"]
    ]


class Stats(Moved):
    event: Literal["stats"]
    complete: Annotated[bool, "false when the transfer was cut short"]


class Closed(Moved):
    event: Literal["closed"]
    peer: Annotated[str, "who it was"]


class Exec(TypedDict):
    event: Literal["exec"]
    peer: Annotated[str, "for whom it ran"]
    returncode: Annotated[int, "its exit status"]


class Refusal(TypedDict):
    """Where the kernel refused: the errno and what it means on vsock."""

    errno: NotRequired[Annotated[int | None, "when the kernel refused it: the errno number"]]
    errno_name: NotRequired[Annotated[str, "its name (ENOPROTOOPT ...)"]]
    meaning: NotRequired[Annotated[str, "what it means on vsock"]]


class Error(TypedDict):
    event: Literal["error"]
    error: Annotated[str, "the one-line message also printed on stderr"]
    exit_status: Annotated[int, "the exit status"]
    exit_name: Annotated[str, "its name (connection_refused ...)"]
    errno: NotRequired[Annotated[int, "the errno number, when one caused it"]]
    errno_name: NotRequired[Annotated[str, "its name (ECONNRESET ...)"]]
    operation: NotRequired[Annotated[str, "what failed (connect, recv ...)"]]
    address: NotRequired[Annotated[str | None, "where, when known"]]


class Probe(TypedDict):
    event: Literal["probe"]
    address: Annotated[str, "CID:PORT (or the hybrid socket and port)"]
    cid: Annotated[int | None, "the CID (null through a hybrid socket)"]
    port: Annotated[int, "the port"]
    open: Annotated[bool, "whether it accepted"]
    elapsed_ns: Annotated[int, "how long the attempt took"]
    errno: Annotated[int | None, "the errno number, or null when open"]
    errno_name: Annotated[str | None, "its name (ECONNRESET ...), or null when open"]
    meaning: Annotated[str | None, "what it means on vsock, or null when open"]


class ProbeCid(TypedDict):
    event: Literal["probe_cid"]
    cid: Annotated[int, "the CID"]
    exists: Annotated[
        bool | None, "true (a port answered or reset), false (ENODEV), null (no answer)"
    ]
    verdict: Annotated[str, "the same in words"]


DECLARED = (
    Declared(Listening, (*TRANSFER[1:3], "throughput"), "a listener is up"),
    Declared(
        Stalled,
        ("send",),
        "one send has blocked for 10 s (said once per stall; the transfer goes on)",
    ),
    Declared(Connected, ("send", "connect"), "a connection is made"),
    Declared(Accepted, ("recv", "listen"), "a peer connected"),
    Declared(Stats, TRANSFER, "what a transfer moved (partial after an error or a signal)"),
    Declared(Closed, ("listen",), "a connection ended"),
    Declared(Exec, ("listen",), "an --exec command ended"),
    Declared(Error, ("*",), "the last record when a command fails"),
    Declared(Probe, ("connect",), "one port checked by connect --probe"),
    Declared(
        ProbeCid,
        ("connect",),
        "with several CIDs (connect --probe 3-64:22): whether each exists",
    ),
)
