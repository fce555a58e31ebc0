"""A throughput server's metrics: tests by outcome, clients refused, bytes each way,
whether a test runs now, and the build. Fed by the server's records."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from vsockctl.events.throughput import ServerRecord

from .serve import build_info


class ThroughputMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        prefix = "vsockctl_throughput_"
        self.tests = Counter(
            prefix + "tests", "Tests served, by outcome", ["outcome"], registry=registry
        )
        for outcome in ("done", "failed"):
            self.tests.labels(outcome)
        self.refused = Counter(
            prefix + "clients_refused", "Clients refused before a test", registry=registry
        )
        self.bytes = Counter(
            prefix + "bytes", "Bytes of finished tests, by direction", ["direction"],
            registry=registry,
        )  # fmt: skip
        for direction in ("received", "sent"):
            self.bytes.labels(direction)
        self.running = Gauge(prefix + "test_running", "1 while a test runs", registry=registry)
        build_info(registry)

    def record(self, record: ServerRecord) -> None:
        """One of the server's records, counted."""
        if record["event"] == "test":
            self.running.set(1)
        elif record["event"] == "test_done":
            self.running.set(0)
            self.tests.labels("done").inc()
            self.bytes.labels("received").inc(record["received_bytes"])
            self.bytes.labels("sent").inc(record["sent_bytes"])
        elif record["event"] == "test_failed":
            self.running.set(0)
            self.tests.labels("failed").inc()
        elif record["event"] == "refused":
            self.refused.inc()
