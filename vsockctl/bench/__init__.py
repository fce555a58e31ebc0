"""Throughput and latency measurement between two vsockctl ends (``vsockctl throughput``)."""
