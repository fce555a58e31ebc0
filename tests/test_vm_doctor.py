"""``vsockctl doctor`` against real failures in the test VM (loopback only, no guest
transport, no vhost_vsock): each failing check is made to fail for real."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.peers import LOCAL, Listener, free_port, run_vsockctl
from tests.records import json_records
from vsockctl.exit_status import ExitStatus

pytestmark = [pytest.mark.vsock, pytest.mark.kernel_features]


def doctor(*args: str) -> tuple[subprocess.CompletedProcess[bytes], list[dict[str, Any]]]:
    done = run_vsockctl("--json", "doctor", *args)
    checks = json_records(done.stdout, "check")
    (verdict,) = json_records(done.stdout, "diagnosis")
    assert verdict["exit_status"] == done.returncode, done.stdout
    return done, checks


def failed(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """The first failed check; every check after it was not made."""
    index = next(i for i, c in enumerate(checks) if c["passed"] is False)
    assert all(c["passed"] is None for c in checks[index + 1 :]), checks
    assert all(c["passed"] is True for c in checks[:index]), checks
    return checks[index]


def test_a_port_that_accepts_passes_every_check() -> None:
    listener = Listener()
    thread = listener.serve()
    try:
        done, checks = doctor(f"1:{listener.address.port}")
        thread.join(10)
    finally:
        listener.close()
    assert done.returncode == 0, done.stdout
    assert [c["passed"] for c in checks] == [True] * len(checks)
    assert [c["name"] for c in checks][:3] == ["af_vsock", "transport", "conflicts"]
    assert checks[-1]["name"] == "port"


def test_nothing_listening_is_the_port_and_says_how_to_start_one() -> None:
    port = free_port()
    done, checks = doctor(f"{LOCAL}:{port}")
    check = failed(checks)
    assert (check["name"], done.returncode) == ("port", ExitStatus.CONNECTION_REFUSED)
    assert f"vsockctl listen --port {port}" in check["fix"]


def test_cid_2_without_a_guest_transport_is_the_loopback_trap() -> None:
    """The test VM has loopback and no virtio transport: CID 2 would land on loopback.
    Nothing is connected to: the chain breaks before the port."""
    done, checks = doctor("2:22")
    check = failed(checks)
    assert (check["name"], done.returncode) == ("cid2", ExitStatus.VSOCK_UNAVAILABLE)
    assert "loopback" in check["meaning"] and "vmw_vsock_virtio_transport" in check["fix"]
    assert checks[-1] == {**checks[-1], "name": "port", "passed": None}


def test_a_guest_cid_no_vm_owns() -> None:
    """In the test VM no VM has CID 5. Before vhost_vsock is loaded (doctor never loads
    it) the missing module is the broken link; once test_vm_vms has loaded it for its
    QEMU, the missing VM is (on Linux 7 g2h_fallback would send it to a guest
    transport, and there is none either)."""
    vhost = Path("/sys/module/vhost_vsock").is_dir()
    done, checks = doctor("5:22")
    check = failed(checks)
    assert done.returncode == ExitStatus.VSOCK_UNAVAILABLE
    if check["name"] == "transport":
        assert "vhost_vsock" in check["seen"] and "modprobe vhost_vsock" in check["fix"]
    else:  # loaded meanwhile, if not already
        assert vhost or Path("/sys/module/vhost_vsock").is_dir()
        assert (check["name"], check["seen"]) == ("vmm", "no VM on this host has CID 5")


def test_a_port_held_by_a_listener_is_named_with_its_process() -> None:
    listener = Listener()
    try:
        done, checks = doctor("--listen", "--port", str(listener.address.port))
    finally:
        listener.close()
    check = failed(checks)
    assert (check["name"], done.returncode) == ("held", ExitStatus.ERROR)
    assert f"[{os.getpid()}]" in check["seen"], check
    free, checks = doctor("--listen", "--port", str(free_port()))
    assert free.returncode == 0, checks


def test_the_human_report_marks_each_check() -> None:
    done = run_vsockctl("doctor", f"{LOCAL}:{free_port()}")
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("✓ AF_VSOCK") and any(line.startswith("✗ port accepting")
                                                    for line in lines), lines  # fmt: skip
    assert any(line.startswith("  try:   start the listener: vsockctl listen --port")
               for line in lines), lines  # fmt: skip
