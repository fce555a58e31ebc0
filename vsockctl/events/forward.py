"""The ``--json`` records of ``forward`` and ``vms`` (part of :data:`vsockctl.events.EVENTS`)."""

from __future__ import annotations

from vsockctl.events.record import Event

FORWARD_EVENTS: tuple[Event, ...] = (
    Event(
        "forwarding",
        ("forward",),
        "the forwarder is up",
        {
            "listen": "where it accepts (tcp:, unix:, vsock:, uds:)",
            "target": "where each connection goes",
            "max_connections": "how many it relays at once",
        },
    ),
    Event(
        "forward_opened",
        ("forward",),
        "a client's connection reached the target",
        {
            "peer": "the client (tcp:HOST:PORT, vsock:CID:PORT, or the Unix listener)",
            "target": "where it goes",
        },
    ),
    Event(
        "forward_closed",
        ("forward",),
        "a forwarded connection ended",
        {
            "peer": "the client",
            "target": "where it went",
            "from_client_bytes": "bytes relayed from the client to the target",
            "to_client_bytes": "bytes relayed from the target to the client",
            "duration_ns": "from open to close",
            "reason": "done (both closed), client_error, target_error, or stopped",
            "error": "what failed, or null",
        },
    ),
    Event(
        "forward_failed",
        ("forward",),
        "a client's target could not be reached (the client is closed)",
        {"peer": "the client", "target": "the target", "error": "why, in one line"},
    ),
    Event(
        "forward_refused",
        ("forward",),
        "a client was turned away",
        {"peer": "the client", "why": "not allowed by --allow, or no file descriptors left"},
    ),
    Event(
        "forward_totals",
        ("forward",),
        "the last record when the forwarder stops",
        {
            "connections": "connections relayed",
            "failed": "clients whose target could not be reached",
            "refused": "clients turned away",
            "from_client_bytes": "bytes from clients to the target, all told",
            "to_client_bytes": "bytes from the target to clients, all told",
            "duration_ns": "how long the forwarder ran",
        },
    ),
)
VMS_EVENTS: tuple[Event, ...] = (
    Event(
        "vm",
        ("vms",),
        "a guest found on this host",
        {
            "vmm": "qemu, qemu (libvirt), libvirt, firecracker, cloud-hypervisor, crosvm, "
            "vhost-device-vsock or systemd-vmspawn",
            "pid": "the VMM's process (0 when libvirt names a domain whose QEMU is not seen)",
            "name": "the name that works as an address",
            "cid": "the guest's CID, or null",
            "uds": "the hybrid vsock socket (Firecracker, Cloud Hypervisor ...), or null",
            "source": "where the CID or socket came from",
            "notes": "what could not be read, and why",
        },
        {"probe": "with --probe: {port, open, error, status}"},
    ),
    Event("vm_skipped", ("vms",), "a VMM process that could not be read", {"why": "why"}),
)
