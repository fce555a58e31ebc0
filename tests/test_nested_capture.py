"""capture on a KVM host (the test VM, vhost_vsock) sees its guest's traffic: CID 3."""

from __future__ import annotations

import time

import pytest

from tests.capture_peers import Capture, of
from tests.nested.guest import NestedGuest
from tests.peers import run_vsockctl
from tests.records import json_record
from tests.test_nested import GUEST, RETRY, finished
from vsockctl.exit_status import ExitStatus

pytestmark = [pytest.mark.nested, pytest.mark.timeout(600)]


def test_a_capture_on_the_host_sees_the_guests_packets(nested_guest: NestedGuest) -> None:
    port, size = "6101", 1 << 20
    receiver = nested_guest.spawn("vsockctl", "recv", "--port", port, "--json", "/dev/null")
    with Capture("--cid", GUEST, "--port", port) as cap:
        sent = run_vsockctl(
            "send", "--cid", GUEST, "--port", port, "--size", str(size), *RETRY, timeout=600
        )
        got = finished(nested_guest, receiver)
        time.sleep(1)  # the last resets
        rc, records, err = cap.stop()
    assert sent.returncode == 0, sent.stderr
    assert got.rc == 0, got.text
    assert rc == ExitStatus.INTERRUPTED, err
    assert json_record(got.stdout, "stats")["received_bytes"] == size
    packets = of(records, "packet")
    accepted = [i for i, p in enumerate(packets) if p["op"] == "RESPONSE"]
    assert len(accepted) == 1, [p["op"] for p in packets]  # the retries before it were reset
    connection = packets[accepted[0] - 1 :]
    rw = [p for p in connection if p["op"] == "RW"]
    assert sum(p["payload_bytes"] for p in rw) == size
    assert {(p["src_cid"], p["dst_cid"]) for p in rw} == {(2, 3)}  # this host, as its guest sees it
    assert {p["src_cid"] for p in connection if p["op"] in ("RESPONSE", "CREDIT_UPDATE")} == {3}
    (done,) = of(records, "capture_done")
    assert done["dropped"] == 0
