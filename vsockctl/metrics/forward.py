"""A forward's metrics: connections open, total, failed and refused by reason, bytes
each way (live: what open connections moved so far counts too), how long
connections last, and the build."""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from vsockctl.forward.flow import Flow, Refusal

from .serve import build_info

# A forwarded connection lasts from a request (milliseconds) to an ssh session (hours).
DURATION_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 14400)


class ForwardMetrics(Collector):
    """Fed by the forward's report, read by each scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._open: set[Flow] = set()
        self._closed_bytes = {"from_client": 0, "to_client": 0}
        prefix = "vsockctl_forward_"
        self.connections = Counter(
            prefix + "connections", "Connections accepted and relayed", registry=registry
        )
        self.open = Gauge(prefix + "connections_open", "Connections open now", registry=registry)
        self.failed = Counter(
            prefix + "connections_failed",
            "Clients whose target could not be reached, by errno",
            ["reason"],
            registry=registry,
        )
        self.refused = Counter(
            prefix + "connections_refused",
            "Clients closed unserved, by reason",
            ["reason"],
            registry=registry,
        )
        for reason in Refusal:  # every reason shows, at 0 until it happens
            self.refused.labels(reason.value)
        self.duration = Histogram(
            prefix + "connection_duration_seconds",
            "How long relayed connections lasted",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        registry.register(self)
        build_info(registry)

    def opened(self, flow: Flow) -> None:
        with self._lock:
            self._open.add(flow)
        self.connections.inc()
        self.open.inc()

    def closed(self, flow: Flow) -> None:
        with self._lock:
            self._open.discard(flow)
            self._closed_bytes["from_client"] += flow.upstream.bytes
            self._closed_bytes["to_client"] += flow.downstream.bytes
        self.open.dec()
        self.duration.observe(flow.elapsed_ns / 1e9)

    def failed_to(self, error: BaseException) -> None:
        number = getattr(error, "errno", None)
        reason = errno.errorcode.get(number, "other") if isinstance(number, int) else "other"
        self.failed.labels(reason).inc()

    def refused_for(self, reason: Refusal) -> None:
        self.refused.labels(reason.value).inc()

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "vsockctl_forward_bytes",
            "Bytes relayed, by direction (open connections' bytes so far included)",
            labels=["direction"],
        )
        with self._lock:
            moved = dict(self._closed_bytes)
            for flow in self._open:
                moved["from_client"] += flow.upstream.bytes
                moved["to_client"] += flow.downstream.bytes
        for direction, count in moved.items():
            family.add_metric([direction], count)
        yield family
