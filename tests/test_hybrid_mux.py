"""vsockctl against a real hybrid vsock mux: vhost-device-vsock here, the test VM behind it.

This machine's end speaks Unix sockets only (``--uds``, ``uds:``, ``mux.sock_PORT``);
the VM's end is real AF_VSOCK over its virtio transport to CID 2, run through the
agent. One VM serves the whole file, in order: the stall and the backend's death
come last (:mod:`tests.hybrid`).

What the mux does that a kernel does not, each pinned by a test here: a host-side
half-close reaches the guest as a full close; a guest's half-close never reaches
the host; a guest packet over 32 KiB (Linux 6.12.95's nonlinear skbs) is dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hybrid.vm import GUEST_CID, HybridVm
from tests.peers import (
    run_vsockctl,
    sha256_file,
    stop_process,
    vsockctl,
    vsockctl_args,
    write_pattern_file,
)
from tests.records import json_records
from tests.service_peers import SYSTEMD_254, SYSTEMD_254_LIBS
from tests.sshd import SSHD, keygen, ssh_args

pytestmark = [pytest.mark.hybrid, pytest.mark.timeout(600)]

MIB = 1 << 20
SMALL_WRITES = ("--buf-size", "32K")  # what a guest must write through this device
SOCAT_SMALL_WRITES = ("-b", "16384")  # a real peer in the guest, writing as small


def guest_listening(vm: HybridVm, *argv: str) -> int:
    """Start a listening vsockctl in the VM; its pid once it listens."""
    pid = vm.spawn(*argv)
    done = vm.wait_for_output(pid, "listening on", 120)
    assert done.rc is None, done.text
    return pid


def host_listening(*args: str) -> subprocess.Popen[bytes]:
    """Start a listening vsockctl here; returned once it listens (its stderr said so)."""
    proc = vsockctl(*args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stderr is not None
    said = b""
    while b"listening on" not in said:
        line = proc.stderr.readline()
        assert line, said
        said += line
    return proc


def uds(vm: HybridVm) -> tuple[str, str]:
    return ("--uds", str(vm.mux))


# -- the device as the VM sees it ------------------------------------------------------------


def test_info_in_the_vm_sees_the_device(hybrid_vm: HybridVm) -> None:
    done = hybrid_vm.run("vsockctl", "--json", "info")
    assert done.rc == 0, done.text
    (report,) = [r for r in json_records(done.stdout) if "local_cid" in r]
    assert report["local_cid"] == GUEST_CID


def test_vms_lists_the_backend_and_its_qemu_as_one_vm(hybrid_vm: HybridVm) -> None:
    done = run_vsockctl("--json", "vms")
    assert done.returncode == 0, done.stderr
    ours = [r for r in json_records(done.stdout) if r.get("uds") == str(hybrid_vm.mux)]
    assert len(ours) == 1, ours
    assert ours[0]["vmm"] == "qemu" and ours[0]["cid"] == GUEST_CID
    assert "vhost-device-vsock pid" in str(ours[0]["source"])


# -- host to guest ---------------------------------------------------------------------------


@pytest.mark.parametrize("sha256", [True, False], ids=["sha256", "sendfile"])
def test_host_sends_64m_to_a_guest_receiver(
    hybrid_vm: HybridVm, tmp_path: Path, sha256: bool
) -> None:
    src = tmp_path / "src.bin"
    digest = write_pattern_file(src, 64 * MIB)
    receiver = guest_listening(
        hybrid_vm, "vsockctl", "recv", "--port", "5000", "--expect-sha256", digest, "/dev/null"
    )
    sent = run_vsockctl("send", *uds(hybrid_vm), "--port", "5000",
                        *(["--sha256"] if sha256 else []), str(src), timeout=300)  # fmt: skip
    got = hybrid_vm.wait(receiver, 120)
    assert sent.returncode == 0, sent.stderr
    assert got.rc == 0, got.text
    if sha256:
        assert digest in sent.stderr.decode()


def test_connect_gets_the_reply_after_its_input_ends(hybrid_vm: HybridVm) -> None:
    """stdin ends before the echo comes back: a half-close would be a full close here,
    and the guest's echo would fail with EPIPE (seen with a plain shutdown)."""
    echo = hybrid_vm.spawn("socat", *SOCAT_SMALL_WRITES, "VSOCK-LISTEN:5001", "EXEC:cat")
    data = os.urandom(3 * MIB)
    done = subprocess.run(vsockctl_args("connect", *uds(hybrid_vm), "5001", "--retry", "60",
                                        "--retry-delay", "0.5s"),
                          input=data, capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == data
    assert hybrid_vm.wait(echo, 60).rc == 0  # socat's write did not fail (EPIPE)


def test_probe_through_the_mux_finds_exactly_the_open_ports(hybrid_vm: HybridVm) -> None:
    a = guest_listening(hybrid_vm, "vsockctl", "listen", "--port", "5011", "-k")
    b = guest_listening(hybrid_vm, "vsockctl", "listen", "--port", "5013", "-k")
    try:
        done = run_vsockctl("--json", "connect", "--probe", *uds(hybrid_vm), "5010-5013")
    finally:
        for pid in (a, b):
            hybrid_vm.kill(pid)
    results = {r["port"]: r["open"] for r in json_records(done.stdout) if r.get("event") == "probe"}
    assert results == {5010: False, 5011: True, 5012: False, 5013: True}, done.stdout
    assert done.returncode == 4  # not every port accepted: the first refusal's status


def test_forward_tcp_to_a_guest_echo_8_clients(hybrid_vm: HybridVm) -> None:
    echo = hybrid_vm.spawn("socat", *SOCAT_SMALL_WRITES,
                           "VSOCK-LISTEN:5002,fork,backlog=64", "EXEC:cat")  # fmt: skip
    probe = run_vsockctl("connect", "--probe", *uds(hybrid_vm), "5002", "--retry", "60",
                         "--retry-delay", "0.5s")  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    forward = vsockctl("forward", "tcp:127.0.0.1:0", f"uds:{hybrid_vm.mux}:5002",
                       stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert forward.stderr is not None
        first = forward.stderr.readline().decode()
        port = int(first.split("tcp:127.0.0.1:")[1].split()[0])
        data = [os.urandom(MIB) for _ in range(8)]
        got: list[bytes] = [b""] * 8

        def client(i: int) -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:

                def write() -> None:
                    sock.sendall(data[i])
                    sock.shutdown(socket.SHUT_WR)

                writer = threading.Thread(target=write)
                writer.start()
                received = bytearray()
                while chunk := sock.recv(1 << 16):
                    received += chunk
                writer.join()
                got[i] = bytes(received)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
    finally:
        forward.send_signal(signal.SIGTERM)
        _, said = forward.communicate(timeout=60)
        hybrid_vm.kill(echo)
    assert [g == d for g, d in zip(got, data, strict=True)] == [True] * 8, said.decode()[-2000:]


def test_throughput_both_ways_through_the_mux(hybrid_vm: HybridVm) -> None:
    """Both ways end when the data does: the mux drops the guest's half-close, so the
    client learns the end of -R's stream from the server's RESULT (before, both ends
    waited for each other until the server's control timeout, and the client lost
    the race for the control connection now and then: 'Broken pipe')."""
    server = hybrid_vm.spawn("vsockctl", "--json", "throughput", "server", "--port", "5201")
    assert hybrid_vm.wait_for_output(server, '"event": "listening"', 120).rc is None
    try:
        forth = run_vsockctl("--json", "throughput", "client", *uds(hybrid_vm),
                             "--bytes", "32M", timeout=300)  # fmt: skip
        back = run_vsockctl("--json", "throughput", "client", *uds(hybrid_vm), "-R",
                            *SMALL_WRITES, "--bytes", "32M", timeout=300)  # fmt: skip
    finally:
        stopped = hybrid_vm.kill(server)
        server_said = stopped.text  # what the server saw, if a run fails
    for way, done in (("forth", forth), ("back (-R)", back)):
        assert done.returncode == 0, (way, done.stderr, done.stdout[-2000:], server_said[-3000:])
        (summary,) = [r for r in json_records(done.stdout) if r.get("event") == "summary"]
        directions: list[dict[str, dict[str, int]]] = summary["directions"]
        assert [d["receiver"]["bytes"] for d in directions] == [32 * MIB], summary
    ends = [r["event"] for r in json_records(stopped.stdout) if r["event"].startswith("test_")]
    assert ends == ["test_done", "test_done"], server_said[-3000:]


def test_ssh_to_vsock_mux_reaches_sshd_in_the_guest(hybrid_vm: HybridVm, tmp_path: Path) -> None:
    if not SSHD.exists():
        pytest.fail("sshd missing: scripts/vm-packages unpacks it")
    keygen(tmp_path / "client_key")
    pubkey = (tmp_path / "client_key.pub").read_text()
    setup = hybrid_vm.run("python", "-m", "tests.sshd", "/tmp/sshd-hybrid", pubkey)
    assert setup.rc == 0, setup.text
    sshd = guest_listening(hybrid_vm, "vsockctl", "listen", "--port", "22",
                           "--exec", setup.stdout.decode().strip())  # fmt: skip
    session = subprocess.run(
        ssh_args(tmp_path / "client_key", f"vsock-mux{hybrid_vm.mux}", 22,
                 "echo logged in as $(id -u); uname -r"),
        capture_output=True, timeout=180, env={**os.environ, "PATH": _path_with_vsockctl()},
    )  # fmt: skip
    listener = hybrid_vm.wait(sshd, 60)
    assert session.returncode == 0, (session.stderr, listener.text)
    assert session.stdout.decode().splitlines()[0] == "logged in as 0"
    assert "Accepted publickey" in listener.text


def _path_with_vsockctl() -> str:
    """PATH with this checkout's vsockctl first (ssh runs the ProxyCommand through it)."""
    return f"{Path(vsockctl_args()[0]).parent}:{os.environ.get('PATH', '')}"


# -- guest to host ---------------------------------------------------------------------------


@pytest.mark.parametrize("sha256", [True, False], ids=["sha256", "sendfile"])
def test_guest_sends_64m_to_a_host_receiver(
    hybrid_vm: HybridVm, tmp_path: Path, sha256: bool
) -> None:
    out = tmp_path / "out.bin"
    receiver = host_listening("recv", *uds(hybrid_vm), "--port", "6000", str(out))
    if sha256:
        sent = hybrid_vm.run("vsockctl", "send", "--cid", "2", "--port", "6000", "--size", "64M",
                             "--sha256", *SMALL_WRITES)  # fmt: skip
    else:  # a file, so sendfile(2) runs in the guest
        sent = hybrid_vm.run("sh", "-c", "head -c 64M /dev/urandom > /tmp/g.bin && "
                             "sha256sum /tmp/g.bin && vsockctl send --cid 2 --port 6000 "
                             "--buf-size 32K /tmp/g.bin")  # fmt: skip
    _, said = receiver.communicate(timeout=120)
    assert sent.rc == 0, sent.text
    assert receiver.returncode == 0, said
    assert out.stat().st_size == 64 * MIB
    assert sha256_file(out) in sent.text


def test_guest_sends_to_a_host_listener_whose_stdin_ends_at_once(
    hybrid_vm: HybridVm, tmp_path: Path
) -> None:
    """listen's own input ends first (< /dev/null): it must not close the guest out."""
    out = tmp_path / "out.bin"
    listener = host_listening("listen", *uds(hybrid_vm), "--port", "6001", "-o", str(out))
    sent = hybrid_vm.run("vsockctl", "send", "--cid", "2", "--port", "6001", "--size", "16M",
                         "--sha256", *SMALL_WRITES)  # fmt: skip
    _, said = listener.communicate(timeout=120)
    assert sent.rc == 0, (sent.text, said)
    assert listener.returncode == 0, said
    assert sha256_file(out) in sent.text


@pytest.fixture
def tcp_service() -> Iterator[int]:
    """A request/response TCP service here: one line in, its SHA-256 out, then close."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                line = conn.makefile("rb").readline()
                conn.sendall(hashlib.sha256(line).hexdigest().encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()


def test_guest_reaches_a_host_tcp_service_through_forward_on_the_mux(
    hybrid_vm: HybridVm, tcp_service: int
) -> None:
    forward = vsockctl("forward", f"unix:{hybrid_vm.mux}_6002", f"tcp:127.0.0.1:{tcp_service}",
                       stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert forward.stderr is not None
        forward.stderr.readline()  # forwarding ...: listening
        request = b"hello from the guest\n"
        done = hybrid_vm.run("vsockctl", "connect", "2:6002", stdin=request, timeout=120)
    finally:
        forward.send_signal(signal.SIGTERM)
        _, said = forward.communicate(timeout=60)
    assert done.rc == 0, (done.text, said)
    assert done.stdout == hashlib.sha256(request).hexdigest().encode() + b"\n"


# -- failures --------------------------------------------------------------------------------


def test_a_port_nobody_listens_on(hybrid_vm: HybridVm) -> None:
    done = run_vsockctl("send", *uds(hybrid_vm), "--port", "5999", "--size", "1K")
    said = done.stderr.decode()
    assert done.returncode == 4, said
    assert said.count("\n") == 1 and "nothing listens" in said


def test_doctor_through_the_mux_finds_the_port_closed_then_open(hybrid_vm: HybridVm) -> None:
    closed = run_vsockctl("--json", "doctor", *uds(hybrid_vm), "--port", "5998")
    checks = {c["name"]: c["passed"] for c in json_records(closed.stdout) if c["event"] == "check"}
    assert checks == {"af_vsock": True, "hybrid": True, "port": False}, closed.stdout
    assert closed.returncode == 4, closed.stdout
    server = guest_listening(hybrid_vm, "vsockctl", "listen", "-k", "--port", "5998")
    try:
        open_ = run_vsockctl("doctor", *uds(hybrid_vm), "--port", "5998")
    finally:
        hybrid_vm.kill(server)
    assert open_.returncode == 0, open_.stdout
    assert open_.stdout.decode().splitlines()[-1] == "every check passed"


def test_wait_ready_hears_the_guests_systemd_notify_through_the_mux(hybrid_vm: HybridVm) -> None:
    """systemd's own systemd-notify (254) in the guest, vsock-stream:2:PORT as a guest
    behind Firecracker would be told: the mux delivers it on mux.sock_PORT here. The
    mux drops the guest's write shutdown, so wait-ready ends the message on silence
    and closes, which is the end sd_notify waits for."""
    port = 5301
    args = ("--json", "wait-ready", *uds(hybrid_vm), "--port", str(port), "--timeout", "120s")
    proc = vsockctl(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["event"] == "waiting_ready"
        notify = hybrid_vm.run(
            "env", f"NOTIFY_SOCKET=vsock-stream:2:{port}", f"LD_LIBRARY_PATH={SYSTEMD_254_LIBS}",
            str(SYSTEMD_254 / "bin/systemd-notify"), "--no-block", "--ready",
            "--status=Up behind the mux",
        )  # fmt: skip
        out, err = proc.communicate(timeout=60)
    finally:
        stop_process(proc)
    assert notify.rc == 0, notify.text
    assert proc.returncode == 0, err
    (note,) = json_records(out, "notification")
    assert note["socket_type"] == "stream" and note["ready"] is True
    assert note["fields"]["STATUS"] == "Up behind the mux"


def test_seqpacket_over_the_mux_is_refused_in_one_line(hybrid_vm: HybridVm) -> None:
    done = run_vsockctl("send", *uds(hybrid_vm), "--port", "5000", "--type", "seqpacket",
                        "--size", "1K")  # fmt: skip
    said = done.stderr.decode()
    assert done.returncode == 2, said
    assert "carries streams only" in said and said.count("\n") <= 3  # click's usage lines


@pytest.mark.nested_last
def test_a_guest_send_that_stalls_says_so_and_small_writes_pass(hybrid_vm: HybridVm) -> None:
    """1 MiB writes: the 6.12 guest puts each 64 KiB packet in several descriptors and
    vhost-device-vsock 0.3 drops it; the send says so. 32 KiB writes still pass after."""
    receiver = host_listening("recv", *uds(hybrid_vm), "--port", "6003", "/dev/null")
    stalled = hybrid_vm.spawn("vsockctl", "--json", "send", "--cid", "2", "--port", "6003",
                              "--size", "8M")  # fmt: skip
    done = hybrid_vm.wait_for_output(stalled, '"stalled"', 60)
    hybrid_vm.kill(stalled)
    receiver.kill()
    receiver.communicate()
    (record,) = [r for r in json_records(done.stdout) if r.get("event") == "stalled"]
    assert record["sent_bytes"] == 0 and "--buf-size 32K" in str(record["hint"])
    assert "DescriptorLengthTooSmall" in hybrid_vm.device_log()
    # The device is not wedged: the workaround goes through.
    receiver = host_listening("recv", *uds(hybrid_vm), "--port", "6004", "/dev/null")
    sent = hybrid_vm.run("vsockctl", "send", "--cid", "2", "--port", "6004", "--size", "8M",
                         *SMALL_WRITES)  # fmt: skip
    receiver.communicate(timeout=60)
    assert sent.rc == 0 and receiver.returncode == 0, sent.text


@pytest.mark.nested_last
def test_the_backend_dies_mid_transfer(hybrid_vm: HybridVm) -> None:
    """Last: the VM has no vsock device after this."""
    receiver = guest_listening(hybrid_vm, "vsockctl", "recv", "--port", "5003", "/dev/null")
    sender = vsockctl("send", *uds(hybrid_vm), "--port", "5003", "--size", "4G",
                      stderr=subprocess.PIPE)  # fmt: skip
    hybrid_vm.wait_for_output(receiver, "connection from", 60)
    hybrid_vm.kill_device()
    _, said = sender.communicate(timeout=60)
    lines = said.decode().strip().splitlines()
    assert sender.returncode == 7, said
    assert "Traceback" not in said.decode()
    assert any("partial" in line or "sent" in line for line in lines), said  # the stats
