"""The guests of a host as OpenMetrics text, for node_exporter's textfile collector:
one ``vsockctl_vm_info`` sample per guest (CID, VMM, name, hybrid socket) and,
with a probe, ``vsockctl_vm_port_up`` (1 when the guest accepted on the port)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.openmetrics.exposition import generate_latest

from vsockctl.discover.vmm_sources import Guest

from .serve import build_info

LABELS = ["name", "vmm", "pid", "cid", "uds"]


def guests_text(guests: Sequence[Guest], port: int | None, up: Sequence[bool]) -> bytes:
    """OpenMetrics text for ``guests``; with ``port``, ``up[i]`` says whether guest i
    accepted there."""
    registry = CollectorRegistry()
    info = Gauge("vsockctl_vm_info", "A guest on this host, 1 per guest", LABELS,
                 registry=registry)  # fmt: skip
    count = Gauge("vsockctl_vms", "Guests found on this host", registry=registry)
    count.set(len(guests))
    accepted = None
    if port is not None:
        accepted = Gauge("vsockctl_vm_port_up", "1 when the guest accepted on the port",
                         ["name", "vmm", "cid", "port"], registry=registry)  # fmt: skip
    for index, guest in enumerate(guests):
        cid = "" if guest.cid is None else str(guest.cid)
        info.labels(guest.name, guest.vmm, str(guest.pid), cid, guest.uds or "").set(1)
        if accepted is not None:
            accepted.labels(guest.name, guest.vmm, cid, str(port)).set(1 if up[index] else 0)
    build_info(registry)
    text: bytes = generate_latest(registry)  # type: ignore[no-untyped-call]
    return text
