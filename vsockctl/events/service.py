"""The records of running as a service: metrics served, and a guest's notifications
(``wait-ready``)."""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

from .record import Declared


class MetricsServed(TypedDict):
    event: Literal["metrics"]
    url: Annotated[str, "where Prometheus scrapes: http://HOST:PORT/metrics"]


class WaitingReady(TypedDict):
    event: Literal["waiting_ready"]
    address: Annotated[str, "where notifications are awaited: CID:PORT, or the Unix socket"]
    port: Annotated[int, "the port (the one the kernel picked for 'any')"]
    socket_types: Annotated[list[str], "the socket types listened on: dgram, seqpacket, stream"]
    unavailable: Annotated[dict[str, str], "{socket type: why this kernel lacks it}"]


class Notification(TypedDict):
    event: Literal["notification"]
    peer: Annotated[str, "who sent it: CID:PORT, or the Unix peer"]
    socket_type: Annotated[str, "how it came: dgram, seqpacket or stream"]
    fields: Annotated[dict[str, str], "its KEY=VALUE lines (READY, STATUS ...)"]
    ready: Annotated[bool, "whether it said READY=1"]


DECLARED = (
    Declared(MetricsServed, ("forward", "throughput"), "Prometheus metrics are served"),
    Declared(WaitingReady, ("wait-ready",), "listening for a guest's notifications"),
    Declared(Notification, ("wait-ready",), "one sd_notify message"),
)
