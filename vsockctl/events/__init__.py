"""Every ``--json`` record: its event, its keys and what each holds, and a validator.

Each line vsockctl prints with ``--json`` is one JSON object whose ``event``
key names its kind. The keys of each kind are declared here once: the
validator checks records against them (with ``VSOCKCTL_CHECK_EVENTS=1`` in the
environment, vsockctl checks each record before printing it, as the tests
run it), and the man pages list them from here.

Units follow one rule: sizes in bytes, durations in nanoseconds (keys ending
in ``_ns``), rates in bytes per second (``bytes_per_second``). Where a record
had a key in another unit before the rule, that key is still there, marked
"kept for older scripts": throughput's ``seconds``, ``bits_per_second``,
interval ``start``/``end``, CPU ``*_seconds`` and latency ``*_us``.
Parameters a test was asked for (``seconds``, ``interval`` in ``test`` and
``start``) keep the units of the command line.
"""

from __future__ import annotations

import os
from typing import Any

from vsockctl.events import throughput as schema
from vsockctl.events.forward import FORWARD_EVENTS, VMS_EVENTS
from vsockctl.events.record import Event

STATS: dict[str, str] = {
    "sent_bytes": "bytes sent",
    "received_bytes": "bytes received",
    "elapsed_ns": "from the start of the transfer to its end",
    "bytes_per_second": "(sent + received) / elapsed time",
    "sent_sha256": "SHA-256 of what was sent (with --sha256), else null",
    "received_sha256": "SHA-256 of what was received (with --sha256), else null",
}
MESSAGE_STATS: dict[str, str] = {
    "sent_messages": "seqpacket only: messages sent",
    "received_messages": "messages received",
    "truncated_messages": "messages longer than the buffer (cut, counted)",
    "message_sizes": "{size: count} of the messages received",
}
ERRNO: dict[str, str] = {
    "errno": "the errno number",
    "errno_name": "its name (ECONNRESET ...)",
    "meaning": "what it means on vsock",
}
TRANSFER = ("send", "recv", "listen", "connect")

EVENTS: tuple[Event, ...] = (
    Event(
        "listening",
        (*TRANSFER[1:3], "throughput"),
        "a listener is up",
        {
            "address": "CID:PORT it is bound to",
            "cid": "the bound CID",
            "port": "the bound port (the kernel's pick with --port any)",
            "local_cid": "this machine's CID, or null when unknown",
        },
    ),
    Event(
        "stalled",
        ("send",),
        "one send has blocked for 10 s (said once per stall; the transfer goes on)",
        {
            "waited_ns": "how long the send under way has blocked",
            "sent_bytes": "bytes sent before it",
            "hint": "the likely causes, and what to try",
        },
    ),
    Event(
        "connected",
        ("send", "connect"),
        "a connection is made",
        {"peer": "the peer, as given", "local": "our end"},
    ),
    Event(
        "accepted",
        ("recv", "listen"),
        "a peer connected",
        {"peer": "the peer's CID:PORT (or the hybrid socket)", "local": "our end"},
    ),
    Event(
        "stats",
        TRANSFER,
        "what a transfer moved (partial after an error or a signal)",
        {"complete": "false when the transfer was cut short", **STATS},
        MESSAGE_STATS,
    ),
    Event(
        "closed",
        ("listen",),
        "a connection ended",
        {"peer": "who it was", **STATS},
        MESSAGE_STATS,
    ),
    Event(
        "exec",
        ("listen",),
        "an --exec command ended",
        {"peer": "for whom it ran", "returncode": "its exit status"},
    ),
    Event(
        "error",
        ("*",),
        "the last record when a command fails",
        {
            "message": "the one-line message also printed on stderr",
            "exit_status": "the exit status",
            "exit_name": "its name (connection_refused ...)",
        },
        {
            "errno": ERRNO["errno"],
            "errno_name": ERRNO["errno_name"],
            "operation": "what failed (connect, recv ...)",
            "address": "where, when known",
        },
    ),
    Event(
        "sockopt",
        (*TRANSFER, "throughput", "sockopt", "forward"),
        "an option set (--sockopt, the default vsock buffer, sockopt set)",
        {
            "name": "the option",
            "requested": "the value asked for (bytes; ns for durations; 0 or 1 for on/off)",
            "requested_text": "as typed",
            "effective": "what the kernel holds now, in the same unit (null when refused)",
            "changed": "whether the kernel changed the value",
            "note": "why it differs, or null",
        },
        ERRNO,
    ),
    Event(
        "sockopt_value",
        ("sockopt",),
        "an option read (sockopt get)",
        {"name": "the option", "value": "its value (ns for durations), or null when refused"},
        ERRNO,
    ),
    Event(
        "sockopt_option",
        ("sockopt",),
        "an option vsockctl knows (sockopt list)",
        {
            "name": "its name on the command line",
            "level": "the socket level's name",
            "level_number": "the level",
            "number": "the option number",
            "ctype": "its C type",
            "width": "bytes",
            "default": "the kernel's default",
            "linux": "the Linux constant's name",
            "vmci": "the VMware constant's name",
            "handled": "whether this kernel handles it",
            "value": "its value on a fresh socket (ns for durations), or null",
            "errno_name": "why not, or null",
            "summary": "what it does",
        },
    ),
    Event(
        "probe",
        ("connect",),
        "one port checked by connect --probe",
        {
            "address": "CID:PORT (or the hybrid socket and port)",
            "cid": "the CID",
            "port": "the port",
            "open": "whether it accepted",
            "elapsed_ns": "how long the attempt took",
            **{key: f"{text}, or null when open" for key, text in ERRNO.items()},
        },
    ),
    Event(
        "probe_cid",
        ("connect",),
        "with several CIDs (connect --probe 3-64:22): whether each exists",
        {
            "cid": "the CID",
            "exists": "true (a port answered or reset), false (ENODEV), null (no answer)",
            "verdict": "the same in words",
        },
    ),
    Event(
        "info",
        ("info",),
        "the report on vsock here",
        {
            "kernel": "the running kernel's release",
            "af_vsock": "whether socket(AF_VSOCK) works",
            "vsock_module": "whether the vsock module is loaded or built in",
            "local_cid": "this machine's CID, or null",
            "local_cid_error": "why it is unknown, or null",
            "dev_vsock": "whether /dev/vsock exists",
            "dev_vhost_vsock": "whether /dev/vhost-vsock exists",
            "transports": "[{name, module, role, description, present}]",
            "diag_loaded": "whether vsock_diag is loaded (for ls)",
            "ns_mode": "/proc/sys/net/vsock/ns_mode, or null",
            "child_ns_mode": "/proc/sys/net/vsock/child_ns_mode, or null",
            "modules": "{module: loaded, built-in, loadable, absent (this kernel was built "
            "without it) or unknown (no /lib/modules for this kernel)}",
            "socket_types": "[{type, usable, error, meaning}]",
            "features": "[{name, available, how}]: seqpacket, msg_zerocopy, siocoutq, siocinq, "
            "sockmap, netns, each tried here (available null: could not be tried)",
            "usable": "whether vsock can carry data here",
            "role": "guest, host, guest+host or none",
            "loopback": "whether CID 1 (vsock_loopback) works",
            "notes": "findings, as text",
        },
    ),
    Event(
        "uds",
        ("info",),
        "a hybrid vsock socket checked (info --uds)",
        {
            "path": "the socket's path",
            "exists": "whether the path exists",
            "socket": "whether it is a Unix socket",
            "accepting": "whether something accepts on it",
        },
        {"port": "with --port: {port, open, error, status}"},
    ),
    Event(
        "socket",
        ("ls",),
        "one vsock socket",
        {
            "type": "stream, seqpacket or dgram",
            "state": "listen, established ...",
            "local": "CID:PORT",
            "local_cid": "its CID",
            "local_port": "its port",
            "peer": "CID:PORT",
            "peer_cid": "its CID",
            "peer_port": "its port",
            "shutdown": "which directions are shut down",
            "inode": "the socket's inode",
            "cookie": "the kernel's socket cookie",
            "processes": "[{pid, name}] holding it",
        },
    ),
    Event(
        "start",
        ("throughput",),
        "a test begins (client)",
        {
            "test": "the test's number on the server",
            "data_port": "where the data connections went",
            "buffers": "effective buffer sizes of the first data socket",
            **schema.TEST,
        },
    ),
    Event(
        "interval",
        ("throughput",),
        "one --interval of a test (client)",
        schema.INTERVAL,
    ),
    Event(
        "summary",
        ("throughput",),
        "the end of a test (client): see SUMMARY below",
        {k: v for k, v in schema.SUMMARY.items() if k != "event"},
        schema.SUMMARY_OPTIONAL,
        schema.validate_summary,
    ),
    Event(
        "test",
        ("throughput",),
        "a test begins (server)",
        {"test": "its number", "peer": "the client", **schema.TEST},
    ),
    Event(
        "test_done",
        ("throughput",),
        "a test ended (server)",
        {
            "test": "its number",
            "peer": "the client",
            "received_bytes": "bytes the server received",
            "sent_bytes": "bytes the server sent",
        },
    ),
    Event(
        "refused",
        ("throughput",),
        "a client that did not ask for a test properly (server)",
        {"peer": "who", "error": "what was wrong"},
    ),
    Event(
        "test_failed",
        ("throughput",),
        "a test that broke off (server)",
        {"test": "its number", "peer": "the client", "error": "what happened"},
    ),
    *FORWARD_EVENTS,
    *VMS_EVENTS,
)
BY_NAME: dict[str, Event] = {event.name: event for event in EVENTS}


def validate(record: Any) -> list[str]:
    """Every way ``record`` departs from its declaration (empty when it matches)."""
    if not isinstance(record, dict):
        return ["a record is not a JSON object"]
    name = record.get("event")
    event = BY_NAME.get(name) if isinstance(name, str) else None
    if event is None:
        return [f"unknown event {name!r}"]
    problems = [f"{name} lacks {key!r}" for key in event.keys if key not in record]
    problems += [
        f"{name} has undeclared {key!r}"
        for key in record
        if key != "event" and key not in event.keys and key not in event.optional
    ]
    if event.deeper is not None:
        problems += event.deeper(record)
    return problems


def for_command(command: str) -> list[Event]:
    """The events ``command`` may print, in declaration order."""
    return [e for e in EVENTS if command in e.commands or "*" in e.commands]


CHECKING = os.environ.get("VSOCKCTL_CHECK_EVENTS") == "1"


class UndeclaredRecord(AssertionError):
    """A record that does not match its declaration (only with VSOCKCTL_CHECK_EVENTS=1)."""


def check(record: dict[str, Any]) -> None:
    """With VSOCKCTL_CHECK_EVENTS=1, refuse a record that does not match its declaration."""
    if CHECKING and (problems := validate(record)):
        raise UndeclaredRecord("; ".join(problems))
