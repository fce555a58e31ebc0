"""What this machine has and runs: vsock support, sockets and guests.

``system`` probes vsock here (transports, CID, socket types, kernel features)
with ``kmod`` for module states and ``sockmap`` for BPF; ``diag`` lists vsock
sockets through sock_diag; ``vms`` finds guests and their CIDs from the VMMs'
own configuration (``vmm_sources`` reads each VMM's); ``portscan`` probes
ports and CIDs.
"""
