"""vms against a real QEMU in the VM: a paused guest holding a vhost-vsock device."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import free_port, run_vsockctl, stop_process
from tests.records import json_records, metric_families
from vsockctl.events.catalog import validate
from vsockctl.exit_status import ExitStatus

pytestmark = [pytest.mark.vsock, pytest.mark.timeout(240)]

HELD_CID = 7
VHOST_DEVICE_VSOCK = Path("/opt/vsockctl-vm/vhost-device-vsock/usr/bin/vhost-device-vsock")


@pytest.fixture(scope="module")
def held_guest() -> Iterator[subprocess.Popen[bytes]]:
    """QEMU started paused (-S): it boots nothing, but holds CID 7 through vhost_vsock."""
    subprocess.run(["modprobe", "vhost_vsock"], check=True)
    args = ["qemu-system-x86_64", "-name", "heldvm", "-S", "-nodefaults", "-display", "none"]
    args += ["-machine", "q35", "-accel", "tcg", "-m", "64"]
    args += ["-device", f"vhost-vsock-pci,guest-cid={HELD_CID}"]
    qemu = subprocess.Popen(args, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not _holds_vhost_vsock(qemu.pid):  # the device is set up: the CID is taken
        assert qemu.poll() is None, qemu.stderr.read() if qemu.stderr else ""
        assert time.monotonic() < deadline, "QEMU did not open /dev/vhost-vsock"
        time.sleep(0.2)
    yield qemu
    stop_process(qemu)


def _holds_vhost_vsock(pid: int) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    return any(_link(f"/proc/{pid}/fd/{fd}") == "/dev/vhost-vsock" for fd in fds)


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def test_vms_finds_the_real_qemu(held_guest: subprocess.Popen[bytes]) -> None:
    result = run_vsockctl("--json", "vms")
    assert result.returncode == 0, result.stderr
    records = json_records(result.stdout)
    assert all(validate(r) == [] for r in records)
    (mine,) = [r for r in records if r["pid"] == held_guest.pid]
    assert (mine["vmm"], mine["name"], mine["cid"]) == ("qemu", "heldvm", HELD_CID)
    assert mine["source"] == f"command line: -device vhost-vsock-pci,guest-cid={HELD_CID}"


def test_its_name_is_an_address_for_its_cid(held_guest: subprocess.Popen[bytes]) -> None:
    """The guest is paused, so nothing answers: the connect times out at CID 7."""
    result = run_vsockctl("--json", "connect", "--timeout", "2s", "heldvm:22", input=b"")
    error = json_records(result.stdout)[-1]
    assert result.returncode == 5, result.stderr
    assert error["address"] == f"{HELD_CID}:22" and error["errno_name"] == "ETIMEDOUT"


def test_a_cid_scan_tells_guests_from_nothing(held_guest: subprocess.Popen[bytes]) -> None:
    """CID 1 answers (a reset: it exists), 3 is no one's (ENODEV), 7 is paused (no answer)."""
    port = str(free_port())
    result = run_vsockctl(
        "--json", "connect", "--probe", "--timeout", "2s", f"1,3,{HELD_CID}:{port}"
    )
    records = json_records(result.stdout)
    assert all(validate(r) == [] for r in records)
    verdicts = {r["cid"]: r["exists"] for r in records if r["event"] == "probe_cid"}
    assert verdicts == {1: True, 3: False, HELD_CID: None}, records
    assert result.returncode == 4  # the first port that did not accept was refused


def test_doctor_finds_the_qemu_that_owns_the_cid(held_guest: subprocess.Popen[bytes]) -> None:
    """Every link holds up to the port: the guest is paused, so the port times out."""
    done = run_vsockctl("--json", "doctor", "--timeout", "2s", "heldvm:22")
    checks = {c["name"]: c for c in json_records(done.stdout, "check")}
    assert checks["vmm"]["passed"] is True, checks
    assert f"qemu pid {held_guest.pid} (heldvm)" in checks["vmm"]["seen"]
    assert checks["port"]["passed"] is False and "ETIMEDOUT" in checks["port"]["seen"]
    assert done.returncode == 5


def test_doctor_on_two_vmms_claiming_one_cid(
    held_guest: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """A real second VMM for CID 7: rust-vmm's vhost-device-vsock configured for it (it
    waits for a vhost-user frontend and opens no vsock socket)."""
    spec = f"guest-cid={HELD_CID},socket={tmp_path}/vhu.sock,uds-path={tmp_path}/mux.sock"
    argv = [str(VHOST_DEVICE_VSOCK), "--vm", spec]
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as second:
        try:
            deadline = time.monotonic() + 60
            while not (tmp_path / "vhu.sock").exists():
                assert second.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            done = run_vsockctl("--json", "doctor", "--timeout", "2s", f"{HELD_CID}:22")
            metrics = run_vsockctl("vms", "--probe", "22", "--format", "openmetrics")
        finally:
            second.kill()
    vmm = {c["name"]: c for c in json_records(done.stdout, "check")}["vmm"]
    assert done.returncode == ExitStatus.ERROR, done.stdout
    assert vmm["passed"] is False and f"2 VMMs claim CID {HELD_CID}" in vmm["seen"], vmm
    assert "vhost-device-vsock" in vmm["seen"] and "qemu" in vmm["seen"]
    # the same two, as node_exporter's textfile collector reads them
    families = metric_families(metrics.stdout, openmetrics=True)
    guests = {(s.labels["vmm"], s.labels["cid"]) for s in families["vsockctl_vm_info"].samples}
    assert {("qemu", str(HELD_CID)), ("vhost-device-vsock", str(HELD_CID))} <= guests
    up = {s.labels["name"]: s.value for s in families["vsockctl_vm_port_up"].samples}
    assert up["heldvm"] == 0  # paused: the port did not answer
