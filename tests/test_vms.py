"""vms on the host tier: each VMM's documented command line and config, read back.

The VMMs cannot run here, so their command lines are reproduced by fakes:
data for the readers, and processes (this Python, started under the VMM's
name) for the scan. Firecracker's and Cloud Hypervisor's API sockets are
fakes too, answering as their documentation shows. A real QEMU holding a
vhost-vsock device runs in the VM tier (test_vm_vms.py).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import Invoke
from tests.fake_vmm import FakeVmm, unix_guest
from tests.forward_peers import DigestServer
from tests.records import json_records
from vsockctl.cli.connect import cid_verdict
from vsockctl.cli.peer import PeerOptions
from vsockctl.discover.portscan import ProbeResult
from vsockctl.discover.vmm_sources import Guest, cloud_hypervisor, firecracker, reader_for
from vsockctl.discover.vms import GuestNameError, find_guest, scan
from vsockctl.events.catalog import validate
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.route import Route

pytestmark = pytest.mark.timeout(60)

# Command lines as the VMMs' documentation shows them.
QEMU = "qemu-system-x86_64 -name web -m 1G -device vhost-vsock-pci,id=vhost-vsock-pci0,guest-cid=3"
LIBVIRT_QEMU = (
    "/usr/bin/qemu-system-x86_64 -name guest=dom1,debug-threads=on -device "
    """'{"driver":"vhost-vsock-pci","id":"vsock0","guest-cid":4,"vhostfd":"28","bus":"pci.7"}'"""
)
CROSVM = "crosvm run --cid 5 --mem 1024 vmlinux"
CROSVM_NEW = "crosvm run --vsock cid=6 vmlinux"
CLOUD_HYPERVISOR = (
    "cloud-hypervisor --kernel vmlinux --vsock cid=7,socket=/tmp/ch.vsock --api-socket /tmp/ch.api"
)
VMSPAWN = "systemd-vmspawn --vsock-cid=8 -M box -i /var/lib/machines/box.raw"
VHOST_USER_QEMU = (
    "qemu-system-x86_64 -name vu -chardev socket,id=char0,path=/tmp/vhost4.socket "
    "-device vhost-user-vsock-pci,chardev=char0"
)
VHOST_DEVICE = (
    "vhost-device-vsock --vm guest-cid=9,uds-path=/tmp/vm9.vsock,socket=/tmp/vhost4.socket"
)
LIBVIRT_XML = """<domstatus state='running' reason='booted' pid='{pid}'>
  <domain type='kvm' id='1'>
    <name>{name}</name>
    <devices>
      <vsock model='virtio'>
        <cid auto='no' address='{cid}'/>
      </vsock>
    </devices>
  </domain>
</domstatus>
"""
FIRECRACKER_CONFIG = {
    "boot-source": {"kernel_image_path": "vmlinux.bin", "boot_args": "console=ttyS0"},
    "machine-config": {"vcpu_count": 2, "mem_size_mib": 1024},
    "vsock": {"guest_cid": 3, "uds_path": "/tmp/fc.vsock"},
}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vsk", dir="/tmp") as name:
        yield Path(name)


def table(*lines: str, first_pid: int = 100) -> list[tuple[int, Sequence[str]]]:
    import shlex

    return [(first_pid + i, shlex.split(line)) for i, line in enumerate(lines)]


def scanned(*lines: str, libvirt_dir: str = "/nonexistent") -> list[Guest]:
    return scan(lambda: table(*lines), libvirt_dir).guests


@pytest.mark.parametrize(
    ("line", "vmm", "name", "cid", "uds"),
    [
        (QEMU, "qemu", "web", 3, None),
        (LIBVIRT_QEMU, "qemu", "dom1", 4, None),
        (CROSVM, "crosvm", "crosvm-100", 5, None),
        (CROSVM_NEW, "crosvm", "crosvm-100", 6, None),
        (CLOUD_HYPERVISOR, "cloud-hypervisor", "ch.api", 7, "/tmp/ch.vsock"),
        (VMSPAWN, "systemd-vmspawn", "box", 8, None),
        (VHOST_DEVICE, "vhost-device-vsock", "vhost-device-vsock-100", 9, "/tmp/vm9.vsock"),
    ],
)
def test_each_vmms_command_line_gives_its_guest(
    line: str, vmm: str, name: str, cid: int, uds: str | None
) -> None:
    (guest,) = scanned(line)
    assert (guest.vmm, guest.pid, guest.name, guest.cid, guest.uds) == (vmm, 100, name, cid, uds)
    assert guest.source.startswith("command line")


def test_a_vhost_user_qemu_takes_cid_and_socket_from_its_backend() -> None:
    (vu,) = scanned(VHOST_USER_QEMU, VHOST_DEVICE)  # one VM, not the backend beside it
    assert (vu.vmm, vu.name, vu.cid, vu.uds) == ("qemu", "vu", 9, "/tmp/vm9.vsock")
    assert "vhost-device-vsock pid 101" in vu.source


def test_other_programs_and_qemu_without_vsock(short_dir: Path) -> None:
    assert (
        reader_for(["bash", "-c", "qemu-system-x86_64 -device vhost-vsock-pci,guest-cid=3"]) is None
    )
    (guest,) = scanned("qemu-system-x86_64 -name plain -m 512")
    assert guest.cid is None and guest.notes == ["no vsock device"]


def test_firecracker_config_file(short_dir: Path) -> None:
    config = short_dir / "fc1.json"
    config.write_text(json.dumps(FIRECRACKER_CONFIG))
    guest = firecracker(
        7, ["firecracker", "--api-sock", "/nonexistent", "--config-file", str(config)]
    )
    assert (guest.name, guest.cid, guest.uds) == ("fc1.json", 3, "/tmp/fc.vsock")
    assert guest.source == f"config file {config}"
    named = firecracker(7, ["firecracker", "--id", "fc-one", "--config-file", str(config)])
    assert named.name == "fc-one"


class FakeApi:
    """A fake VMM API socket (HTTP over Unix): answers GET ``path`` with ``body``."""

    def __init__(self, sock_path: Path, path: str, body: bytes, status: str = "200 OK") -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(sock_path))
        self.sock.listen(4)
        self.requests: list[bytes] = []
        self.path, self.body, self.status = path, body, status
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(4096)
                self.requests.append(request)
                ok = request.startswith(f"GET {self.path} ".encode())
                status = self.status if ok else "404 Not Found"
                body = self.body if ok else b""
                head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                conn.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)

    def close(self) -> None:
        self.sock.close()


def test_firecracker_api_socket_get_vm_config(short_dir: Path) -> None:
    api = FakeApi(short_dir / "fc.api", "/vm/config", json.dumps(FIRECRACKER_CONFIG).encode())
    guest = firecracker(9, ["firecracker", "--api-sock", str(short_dir / "fc.api")])
    api.close()
    assert (guest.cid, guest.uds) == (3, "/tmp/fc.vsock")
    assert guest.source == f"API {short_dir}/fc.api: GET /vm/config"
    assert api.requests[0].startswith(b"GET /vm/config HTTP/1.1\r\n")


def test_cloud_hypervisor_api_socket_vm_info(short_dir: Path) -> None:
    info = {"config": {"vsock": {"cid": 12, "socket": "/tmp/ch12.vsock", "id": "_vsock0"}}}
    api = FakeApi(short_dir / "ch.sock", "/api/v1/vm.info", json.dumps(info).encode())
    guest = cloud_hypervisor(9, ["cloud-hypervisor", "--api-socket", f"path={short_dir}/ch.sock"])
    api.close()
    assert (guest.name, guest.cid, guest.uds) == ("ch", 12, "/tmp/ch12.vsock")


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", "200 OK", "is not JSON"),
        (b"", "500 Internal Server Error", "500"),
    ],
)
def test_a_bad_api_answer_is_a_note(short_dir: Path, body: bytes, status: str, says: str) -> None:
    api = FakeApi(short_dir / "fc.api", "/vm/config", body, status)
    guest = firecracker(9, ["firecracker", "--api-sock", str(short_dir / "fc.api")])
    api.close()
    assert guest.cid is None and says in guest.notes[0]


def test_garbage_and_unreadable_configs_are_notes(short_dir: Path) -> None:
    (short_dir / "bad.json").write_text("vsock = 3")
    guest = firecracker(1, ["firecracker", "--config-file", str(short_dir / "bad.json")])
    assert guest.cid is None and guest.notes == [f"{short_dir}/bad.json is not JSON"]
    missing = firecracker(1, ["firecracker", "--config-file", str(short_dir / "gone.json")])
    assert "cannot read" in missing.notes[0]
    libvirt = short_dir / "libvirt"
    libvirt.mkdir()
    (libvirt / "broken.xml").write_text("<domstatus><domain>")
    (guest,) = scan(lambda: [], str(libvirt)).guests
    assert guest.vmm == "libvirt" and "is not XML" in guest.notes[0]


def test_libvirt_status_xml_names_the_qemu_it_runs_in(short_dir: Path) -> None:
    libvirt = short_dir / "libvirt"
    libvirt.mkdir()
    (libvirt / "db.xml").write_text(LIBVIRT_XML.format(pid=100, name="db", cid=21))
    (libvirt / "off.xml").write_text(LIBVIRT_XML.format(pid=999, name="other", cid=22))
    guests = scanned("qemu-system-x86_64 -name guest=db,debug-threads=on", libvirt_dir=str(libvirt))
    by_name = {g.name: g for g in guests}
    assert (by_name["db"].vmm, by_name["db"].pid, by_name["db"].cid) == ("qemu (libvirt)", 100, 21)
    assert by_name["db"].source == str(libvirt / "db.xml")
    assert (by_name["other"].vmm, by_name["other"].cid) == ("libvirt", 22)


def test_a_reader_that_fails_skips_that_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import vsockctl.discover.vmm_sources as sources

    def broken(pid: int, argv: Sequence[str]) -> Guest:
        raise KeyError("surprise")

    monkeypatch.setitem(sources.READERS, "crosvm", broken)
    found = scan(lambda: table(CROSVM, QEMU), "/nonexistent")
    assert [g.name for g in found.guests] == ["web"]
    assert found.skipped == ["pid 100 (crosvm): KeyError: 'surprise'"]


def test_names_resolve_once_and_only_once() -> None:
    guests = scanned(
        QEMU, CROSVM, "qemu-system-x86_64 -name twin", "crosvm run --name twin --cid 9"
    )
    assert find_guest("web", guests).cid == 3
    with pytest.raises(GuestNameError, match="'vsockctl vms' lists them"):
        find_guest("nope", guests)
    twins = scanned("crosvm run --name twin --cid 8", "crosvm run --name twin --cid 9")
    with pytest.raises(GuestNameError, match="2 VMs are named 'twin'"):
        find_guest("twin", twins)


def fake_vmm_process(argv: list[str]) -> subprocess.Popen[bytes]:
    """A fake: this Python running under a VMM's name, with the VMM's arguments after '-'
    (it reads its program from stdin, so it lives until stdin closes)."""
    return subprocess.Popen(
        [argv[0], "-", *argv[1:]], executable=sys.executable, stdin=subprocess.PIPE
    )


# Names of the fake VMM processes below: each xdist worker's own, since a name
# that two running VMMs share is refused as ambiguous (as it should be).
FC = "fc1" + os.environ.get("PYTEST_XDIST_WORKER", "")
CV = "cv" + os.environ.get("PYTEST_XDIST_WORKER", "")


@pytest.fixture
def fake_vmms(short_dir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    config = short_dir / "fc1.json"
    config.write_text(json.dumps({"vsock": {"guest_cid": 3, "uds_path": f"{short_dir}/v.sock"}}))
    procs = [
        fake_vmm_process(["firecracker", "--id", FC, "--config-file", str(config)]),
        fake_vmm_process(["crosvm", "run", "--name", CV, "--cid", "44", "vmlinux"]),
    ]
    yield procs
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


def test_scan_finds_running_fake_vmms(fake_vmms: list[subprocess.Popen[bytes]]) -> None:
    guests = {g.pid: g for g in scan().guests}
    fc, cv = (guests[proc.pid] for proc in fake_vmms)
    assert (fc.vmm, fc.name, fc.cid) == ("firecracker", FC, 3)
    assert (cv.vmm, cv.name, cv.cid) == ("crosvm", CV, 44)


def test_vms_json_records(invoke: Invoke, fake_vmms: list[subprocess.Popen[bytes]]) -> None:
    result = invoke(["--json", "vms"])
    assert result.exit_code == 0, result.output
    records = json_records(result.output)
    assert all(validate(r) == [] for r in records)
    mine = {r["pid"]: r for r in records if r["pid"] in {p.pid for p in fake_vmms}}
    assert {r["name"] for r in mine.values()} == {FC, CV}


def test_vms_piped_shows_every_row_whole(
    invoke: Invoke, fake_vmms: list[subprocess.Popen[bytes]]
) -> None:
    """'vms | cat' cut the source column: piped, a row is one line with all of it."""
    result = invoke(["vms"])
    (row,) = [line for line in result.stdout.splitlines() if line.split()[2:3] == [FC]]
    guest = next(g for g in scan().guests if g.pid == fake_vmms[0].pid)
    assert row.endswith(guest.source) and "…" not in result.stdout


def test_no_vms_exits_3(invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vsockctl.discover.vms.processes", lambda: [])
    monkeypatch.setattr(
        "vsockctl.discover.vmm_sources.libvirt_domains", lambda directory="": iter(())
    )
    monkeypatch.setattr("vsockctl.discover.vms.libvirt_domains", lambda directory="": iter(()))
    result = invoke(["vms"])
    assert result.exit_code == 3 and "no VMs found" in result.output, result.output


def test_a_firecracker_name_is_its_hybrid_socket(
    short_dir: Path, fake_vmms: list[subprocess.Popen[bytes]]
) -> None:
    """'vsockctl connect fc1:22' goes through fc1's uds_path (a FakeVmm): no --uds needed."""
    guest_port = DigestServer(_unix_listener(short_dir / "guest_22"))
    with FakeVmm(short_dir / "v.sock", unix_guest(short_dir)) as vmm:
        result = subprocess.run(
            [sys.executable, "-m", "vsockctl", "connect", f"{FC}:22"],
            input=b"hello",
            capture_output=True,
            timeout=30,
        )
    guest_port.close()
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == 32  # the guest's digest of what it got
    assert vmm.requests == [b"CONNECT 22\n"]


def test_unknown_and_numeric_names(invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vsockctl.discover.vms.processes", lambda: table(QEMU))
    result = invoke(["connect", "nosuchvm:22"])
    assert result.exit_code == 2 and "'vsockctl vms' lists them" in result.output
    result = invoke(["connect", "99999999999:22"])  # a number is a CID, never a name
    assert result.exit_code == 2 and "larger than" in result.output


def _unix_listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(4)
    return sock


@pytest.mark.parametrize(
    ("host", "route"),
    [
        ("vsock/3", Route(VsockAddress(3, 22))),
        ("vsock%3", Route(VsockAddress(3, 22))),
        ("vsock-mux//run/fc/v.sock", Route.hybrid("/run/fc/v.sock", 22)),
        ("vsock-mux/run/fc/v.sock", Route.hybrid("/run/fc/v.sock", 22)),  # systemd's reading
        ("vsock-mux/./v.sock", Route.hybrid("./v.sock", 22)),
        ("machine/web", Route(VsockAddress(3, 22))),  # a VM's name, as systemd-machined has it
        ("web", Route(VsockAddress(3, 22))),
    ],
)
def test_ssh_proxycommand_host_forms(
    monkeypatch: pytest.MonkeyPatch, host: str, route: Route
) -> None:
    """ProxyCommand='vsockctl connect %h:%p' with systemd's ssh host forms."""
    monkeypatch.setattr("vsockctl.discover.vms.processes", lambda: table(QEMU))
    peer = PeerOptions(timeout=1.0, retry=0, retry_delay=1.0, uds=None, to_host=False)
    assert peer.route(f"{host}:22", None, None) == route


def result(cid: int, err: int | None) -> ProbeResult:
    return ProbeResult(cid, 22, err is None, 1000, err, errno.errorcode.get(err or 0))


@pytest.mark.parametrize(
    ("errnos", "exists"),
    [
        ([None, errno.ECONNRESET], True),
        ([errno.ECONNRESET], True),
        ([errno.ENODEV, errno.ENODEV], False),
        ([errno.ETIMEDOUT], None),
        ([errno.EACCES], None),
    ],
)
def test_a_cid_exists_when_it_answers(errnos: list[int | None], exists: bool | None) -> None:
    assert cid_verdict([result(3, err) for err in errnos])[0] is exists


def test_probe_by_a_firecracker_name_goes_through_its_socket(
    short_dir: Path, fake_vmms: list[subprocess.Popen[bytes]]
) -> None:
    guest_port = DigestServer(_unix_listener(short_dir / "guest_22"))
    with FakeVmm(short_dir / "v.sock", unix_guest(short_dir)):
        result = subprocess.run(
            [sys.executable, "-m", "vsockctl", "--json", "connect", "--probe", f"{FC}:22,23"],
            capture_output=True,
            timeout=30,
        )
    guest_port.close()
    records = json_records(result.stdout)
    assert [r.get("open") for r in records] == [True, False], (records, result.stderr)
    assert result.returncode == 4
