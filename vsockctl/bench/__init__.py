"""``vsockctl throughput``: throughput and latency between two vsockctl ends (iperf's job).

``spec`` is what a test is; ``protocol`` the small versioned control exchange
the two ends agree on it over; ``server`` and ``client`` are the two ends;
``measure`` is what both do alike once their data connections are up, with the
data loops in ``pumps`` and round trips in ``latency``.
"""
