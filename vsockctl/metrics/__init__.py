"""Prometheus metrics for a fleet: what a forward or a throughput server did, served
on /metrics, and the guests of a host as OpenMetrics text (prometheus_client).

Loaded only by a command asked for metrics: prometheus_client stays out of the
start-up of every other command.
"""
