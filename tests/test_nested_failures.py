"""Host and guest for real, when things go wrong as users meet them.

A CID with no guest, a guest port with nothing listening, a guest paused
through QEMU's monitor (while connecting and while bytes flow) and a guest
powered off in the middle of a transfer: each ends in one line and its
documented exit status, never a hang. The power-off runs last (``nested_last``).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.nested.guest import NestedGuest
from tests.peers import run_vsockctl, vsockctl
from tests.records import json_record, json_records
from tests.test_nested import GUEST, RETRY, finished, socat_listener
from vsockctl.exit_status import ExitStatus

pytestmark = [pytest.mark.nested, pytest.mark.timeout(600)]


def test_a_cid_with_no_guest(nested_guest: NestedGuest) -> None:
    done = run_vsockctl("connect", "9:6000", "--timeout", "3s")
    assert done.returncode == ExitStatus.VSOCK_UNAVAILABLE, done.stderr
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "ENODEV" in lines[0], lines


def test_a_guest_port_with_nothing_listening(nested_guest: NestedGuest) -> None:
    done = run_vsockctl("connect", f"{GUEST}:6999", "--timeout", "30s")
    assert done.returncode == ExitStatus.CONNECTION_REFUSED, done.stderr
    assert len(done.stderr.decode().strip().splitlines()) == 1, done.stderr


def _doctor(*args: str) -> tuple[int, dict[str, dict[str, object]]]:
    done = run_vsockctl("--json", "doctor", *args, "--timeout", "30s")
    checks = {str(c["name"]): c for c in json_records(done.stdout, "check")}
    return done.returncode, checks


def test_doctor_walks_to_a_guest_that_answers(nested_guest: NestedGuest) -> None:
    echo = socat_listener(nested_guest, 6030, "EXEC:cat")
    try:
        status, checks = _doctor(f"{GUEST}:6030")
    finally:
        nested_guest.kill(echo)
    assert status == 0, checks
    assert "qemu" in str(checks["vmm"]["seen"]), checks["vmm"]
    assert checks["port"]["passed"] is True


def test_doctor_on_a_cid_no_vm_owns(nested_guest: NestedGuest) -> None:
    status, checks = _doctor("9:6000")
    assert status == ExitStatus.VSOCK_UNAVAILABLE
    assert checks["vmm"]["passed"] is False and "no VM on this host has CID 9" in str(
        checks["vmm"]["seen"]
    )
    assert checks["port"]["passed"] is None


def test_connecting_to_a_paused_guest_times_out(nested_guest: NestedGuest) -> None:
    echo = socat_listener(nested_guest, 6020, "EXEC:cat")
    nested_guest.monitor("stop")
    try:
        started = time.monotonic()
        done = run_vsockctl("connect", f"{GUEST}:6020", "--timeout", "3s")
        took = time.monotonic() - started
    finally:
        nested_guest.monitor("cont")
    assert done.returncode == ExitStatus.TIMED_OUT, done.stderr
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "ETIMEDOUT" in lines[0], lines
    assert took < 60
    # Resumed, the guest answers again.
    again = run_vsockctl("connect", "--probe", f"{GUEST}:6020", "--timeout", "60s")
    nested_guest.kill(echo)
    assert again.returncode == 0, again.stderr


def _sender(port: str, size: str) -> subprocess.Popen[bytes]:
    args = ["send", "--to", f"{GUEST}:{port}", "--size", size, "--pattern", "random"]
    args += ["--sha256", "--json", *RETRY]
    return vsockctl(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_bytes(guest: NestedGuest, receiver: int) -> None:
    """Until the guest's receiver has accepted (bytes are flowing)."""
    said = guest.wait_for_output(receiver, '"accepted"', timeout=300)
    assert '"accepted"' in said.text, said.text
    time.sleep(2)


def test_a_transfer_survives_a_pause(nested_guest: NestedGuest) -> None:
    receiver = nested_guest.spawn(
        "vsockctl", "recv", "--port", "6021", "--sha256", "--json", "/dev/null"
    )
    sender = _sender("6021", "32M")
    try:
        _wait_for_bytes(nested_guest, receiver)
        nested_guest.monitor("stop")
        time.sleep(5)
        assert sender.poll() is None  # stalled, not failed
        nested_guest.monitor("cont")
        out, err = sender.communicate(timeout=600)
    finally:
        if sender.poll() is None:
            sender.kill()
    got = finished(nested_guest, receiver)
    assert sender.returncode == 0, err
    assert got.rc == 0, got.text
    stats_sent, stats_got = json_record(out, "stats"), json_record(got.stdout, "stats")
    assert stats_sent["sent_sha256"] == stats_got["received_sha256"] is not None
    assert stats_got["received_bytes"] == 32 << 20


@contextlib.contextmanager
def gigabyte_under_way(
    guest: NestedGuest, port: str
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A 1 GiB send from here to a recv in the guest, once bytes flow; the sender
    is killed at the end if it still runs."""
    receiver = guest.spawn("vsockctl", "recv", "--port", port, "--json", "/dev/null")
    sender = _sender(port, "1G")
    try:
        _wait_for_bytes(guest, receiver)
        yield receiver, sender
    finally:
        if sender.poll() is None:
            sender.kill()


def test_sigterm_stops_a_send_stuck_on_a_paused_guest(nested_guest: NestedGuest) -> None:
    with gigabyte_under_way(nested_guest, "6022") as (receiver, sender):
        nested_guest.monitor("stop")
        try:
            time.sleep(2)
            sender.send_signal(signal.SIGTERM)
            out, err = sender.communicate(timeout=60)  # no hang on the paused guest
        finally:
            nested_guest.monitor("cont")
    assert sender.returncode == ExitStatus.TERMINATED, err
    stats = json_record(out, "stats")
    assert stats["complete"] is False and 0 < stats["sent_bytes"] < 1 << 30
    got = finished(nested_guest, receiver)
    assert got.rc is not None  # the guest's end ends too, once resumed


@pytest.mark.nested_last
def test_guest_powered_off_mid_transfer(nested_guest: NestedGuest) -> None:
    with gigabyte_under_way(nested_guest, "6023") as (_, sender):
        nested_guest.power_off()
        out, err = sender.communicate(timeout=120)
    assert not nested_guest.alive
    assert sender.returncode == ExitStatus.CONNECTION_LOST, err
    message = [line for line in err.decode().splitlines() if line.startswith("vsockctl:")]
    assert len(message) == 1, err
    assert "went away in the middle" in message[0], message  # ENODEV, or a reset first
    stats = json_record(out, "stats")
    assert stats["complete"] is False and 0 < stats["sent_bytes"] < 1 << 30
