"""``vsockctl doctor`` on the host tier: only what needs no vsock traffic (a hybrid
socket whose VMM is gone, a name no VM has, bad command lines). The rest fails
for real in the VM tier (tests/test_vm_doctor.py, the Linux 7 boot's namespace
test, the hybrid stage)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.peers import run_vsockctl
from tests.records import json_records
from vsockctl.exit_status import ExitStatus


def test_a_hybrid_socket_nobody_accepts_on_is_the_broken_link(tmp_path: Path) -> None:
    path = tmp_path / "v.sock"
    with socket.socket(socket.AF_UNIX) as left:  # a VMM that bound its socket and died
        left.bind(str(path))
    done = run_vsockctl("--json", "doctor", "--uds", str(path), "--port", "52")
    checks = json_records(done.stdout, "check")
    assert [(c["name"], c["passed"]) for c in checks] == [
        ("af_vsock", True),
        ("hybrid", False),
        ("port", None),
    ], checks
    assert "nobody accepts on it" in checks[1]["seen"]
    assert done.returncode == ExitStatus.VSOCK_UNAVAILABLE
    (verdict,) = json_records(done.stdout, "diagnosis")
    assert verdict == {
        "event": "diagnosis",
        "target": f"unix:{path} port 52",
        "passed": False,
        "first_failure": "hybrid",
        "exit_status": 3,
    }


def test_a_missing_socket_in_words(tmp_path: Path) -> None:
    done = run_vsockctl("doctor", "--uds", str(tmp_path / "gone.sock"), "--port", "52")
    said = done.stdout.decode()
    assert "✗ hybrid socket: " in said and "does not exist" in said, said
    assert "  try:   start the VM" in said and "· port accepting: not checked" in said
    assert done.returncode == ExitStatus.VSOCK_UNAVAILABLE


def test_a_name_no_vm_has_stops_at_the_vmm(tmp_path: Path) -> None:
    done = run_vsockctl("--json", "doctor", "no-such-vm-here:22")
    checks = json_records(done.stdout, "check")
    assert [(c["name"], c["passed"]) for c in checks] == [("af_vsock", True), ("vmm", False)]
    assert "no VM named 'no-such-vm-here'" in checks[1]["seen"]
    assert done.returncode == ExitStatus.VSOCK_UNAVAILABLE


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--uds", "/tmp/x.sock"),
        ("--listen",),
        ("--listen", "--port", "5", "3:5"),
        ("--uds", "/tmp/x.sock", "--port", "5", "3:5"),
        ("3:notaport",),
    ],
)
def test_bad_command_lines_are_usage_errors(args: tuple[str, ...]) -> None:
    done = run_vsockctl("doctor", *args)
    assert done.returncode == ExitStatus.USAGE, done.stderr
    assert done.stderr.count(b"\n") <= 3 and b"Traceback" not in done.stderr
