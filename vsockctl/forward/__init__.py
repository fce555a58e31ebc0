"""``vsockctl forward``: accept on one side (TCP, Unix, vsock, hybrid vsock), relay to another.

``sides`` parses and opens the two ends; ``server`` is the forwarder, which
accepts and hands each connection to ``loop`` (one epoll thread for accepts,
connects and short connections) and, when a connection carries more, to two
``direction`` pumps run by ``workers``; ``flow`` is what the forwarder counts
and reports (a connection's flow, the totals, ``--allow``).
"""
