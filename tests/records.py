"""Reading vsockctl's ``--json`` output: one NDJSON reader for every test.

Each record read is checked against its declaration (vsockctl/events/), so a
test that reads a record also checks it, whichever process printed it.
"""

from __future__ import annotations

import json
from typing import Any

from vsockctl.events.catalog import validate


def json_records(output: str | bytes, event: str | None = None) -> list[dict[str, Any]]:
    """The JSON records in ``output``, in order (only ``event``'s when given). Lines
    that are not records (a message on stderr, a progress line) are passed over."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    found = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        assert validate(record) == [], (validate(record), line)
        if event is None or record.get("event") == event:
            found.append(record)
    return found


def json_record(output: str | bytes, event: str | None = None) -> dict[str, Any]:
    """The one record in ``output`` (of ``event``): a second one fails the test."""
    found = json_records(output, event)
    assert len(found) == 1, (event, found, output[-2000:])
    return found[0]


def metric_families(text: str | bytes, *, openmetrics: bool = False) -> dict[str, Any]:
    """Prometheus text (or OpenMetrics text) parsed by prometheus_client's own parser:
    {family name: family}, each with its samples."""
    from prometheus_client import parser
    from prometheus_client.openmetrics import parser as om_parser

    decoded = text.decode() if isinstance(text, bytes) else text
    if openmetrics:
        found = om_parser.text_string_to_metric_families(decoded)  # type: ignore[no-untyped-call]
    else:
        found = parser.text_string_to_metric_families(decoded)
    return {family.name: family for family in found}
