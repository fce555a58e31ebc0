"""Every ``--json`` record in one list, the vocabulary they share, and the check.

With ``VSOCKCTL_CHECK_EVENTS=1`` in the environment vsockctl checks each record
against its declaration before printing it, as the tests run it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from . import capture, forward, service, system, throughput, transfer
from .record import Declared, Key, keys_of, nested, problems

EVENTS: tuple[Declared, ...] = (
    *transfer.DECLARED,
    *system.DECLARED,
    *throughput.DECLARED,
    *forward.DECLARED,
    *capture.DECLARED,
    *service.DECLARED,
)
# What vsockctl prints: one of these (mypy checks each producer against its record).
Record = (
    transfer.Listening
    | transfer.Stalled
    | transfer.Connected
    | transfer.Accepted
    | transfer.Stats
    | transfer.Closed
    | transfer.Exec
    | transfer.Error
    | transfer.Probe
    | transfer.ProbeCid
    | system.Sockopt
    | system.SockoptValue
    | system.SockoptOption
    | system.Info
    | system.Uds
    | system.Socket
    | system.Vm
    | system.VmSkipped
    | system.DoctorCheck
    | system.Diagnosis
    | throughput.Start
    | throughput.IntervalEvent
    | throughput.Summary
    | throughput.Test
    | throughput.TestDone
    | throughput.Refused
    | throughput.TestFailed
    | forward.Forwarding
    | forward.ForwardOpened
    | forward.ForwardClosed
    | forward.ForwardFailed
    | forward.ForwardRefused
    | forward.ForwardTotals
    | capture.Capturing
    | capture.Packet
    | capture.Window
    | capture.ConnectionRecord
    | capture.CaptureDone
    | service.MetricsServed
    | service.WaitingReady
    | service.Notification
)
BY_NAME: dict[str, Declared] = {declared.name: declared for declared in EVENTS}

# The words every record uses for the same thing: printed in the man pages and
# checked against every declaration (tests/test_events.py).
VOCABULARY: tuple[tuple[str, str], ...] = (
    ("event", "names the record"),
    ("*_bytes, bytes", "sizes in bytes"),
    ("*_ns", "durations and times in nanoseconds (elapsed_ns: how long a thing took)"),
    ("bytes_per_second", "rates in bytes per second"),
    ("error", "what went wrong, in one line, or null"),
    ("errno, errno_name", "the errno number and its name (ECONNRESET ...)"),
    ("meaning", "what that errno means on vsock"),
    ("exit_status", "the exit status a failure has"),
    ("available", "whether a thing works here (a transport, a socket type, a feature)"),
    ("open", "whether a port accepted"),
    (
        "kept for older scripts",
        "keys from before these rules, in other units (throughput's seconds, "
        "bits_per_second, start, end, *_seconds and *_us)",
    ),
    (
        "as asked",
        "parameters given on the command line (throughput's seconds and interval) keep its units",
    ),
)
# Words the vocabulary replaced: a declaration that uses one fails the test.
RETIRED: dict[str, str] = {
    "why": "error",
    "reason": "error",
    "message": "error",
    "duration_ns": "elapsed_ns",
    "present": "available",
    "usable": "available",
    "handled": "available",
    "status": "exit_status",
    "errno_text": "errno_name",
}
_DURATION = re.compile(r"(^|_)(seconds|ms|us|duration|time)$")


def every_key(shape: type) -> Iterator[tuple[str, Key]]:
    """Each key of ``shape`` and of the records nested in it, with where it sits."""
    for key in keys_of(shape):
        yield shape.__name__, key
        inner = nested(key.annotation)
        if inner is not None:
            yield from every_key(inner)


def nested_records(declared: list[Declared]) -> list[type]:
    """The records nested in ``declared`` (a summary's TOTALS, info's TRANSPORT ...), once each."""
    found: dict[type, None] = {}
    for one in declared:
        for _, key in every_key(one.shape):
            inner = nested(key.annotation)
            if inner is not None:
                found[inner] = None
    return list(found)


def vocabulary_problems(declared: Declared) -> list[str]:
    """Where a declaration departs from :data:`VOCABULARY`."""
    found = []
    for where, key in every_key(declared.shape):
        if key.name in RETIRED:
            found.append(f"{where}.{key.name}: say {RETIRED[key.name]!r}")
        exempt = "kept for older scripts" in key.meaning or "as asked" in key.meaning
        if _DURATION.search(key.name) and not exempt:
            found.append(f"{where}.{key.name}: durations are *_ns")
        if key.name == "error" and not _text_or_null(key.annotation):
            found.append(f"{where}.error: a line of text")
    return found


def _text_or_null(annotation: Any) -> bool:
    return annotation in (str, str | None)


def validate(record: Any) -> list[str]:
    """Every way ``record`` departs from its declaration (empty when it matches)."""
    if not isinstance(record, dict):
        return ["a record is not a JSON object"]
    name = record.get("event")
    if not isinstance(name, str) or name not in BY_NAME:
        return [f"unknown event {name!r}"]
    declared = BY_NAME[name]
    return problems(record, declared.shape, name)


def for_command(command: str) -> list[Declared]:
    """The records ``command`` may print, in declaration order."""
    return [e for e in EVENTS if command in e.commands or "*" in e.commands]


CHECKING = os.environ.get("VSOCKCTL_CHECK_EVENTS") == "1"


class UndeclaredRecord(AssertionError):
    """A record that does not match its declaration (only with VSOCKCTL_CHECK_EVENTS=1)."""


def check(record: Mapping[str, object]) -> None:
    """With VSOCKCTL_CHECK_EVENTS=1, refuse a record that does not match its declaration."""
    if CHECKING and (found := validate(dict(record))):
        raise UndeclaredRecord("; ".join(found))
