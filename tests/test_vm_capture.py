"""capture on real vsock (CID 1, the loopback transport, a real vsockmon link): op sequences
and byte counts of known exchanges, seqpacket messages, a receiver that stops reading, and
pcap files that tcpdump and tshark write and read."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.capture_peers import Capture, Record, connect_local, of, seqpacket_receiver
from tests.peers import free_port, read_until_listening, run_vsockctl, vsockctl
from tests.records import json_records
from vsockctl.capture.packet import Op
from vsockctl.exit_status import ExitStatus

pytestmark = [pytest.mark.vsock, pytest.mark.timeout(180)]

SYS_NET = Path("/sys/class/net")


def read_back(path: Path, *args: str) -> list[Record]:
    done = run_vsockctl("--json", "capture", "-r", str(path), *args)
    assert done.returncode == 0, done.stderr
    return json_records(done.stdout)


def transfer(port: int, size: int) -> None:
    """``vsockctl send`` of ``size`` bytes to a ``vsockctl recv`` on ``port``, both done."""
    receiver = vsockctl("--json", "recv", "--port", str(port), "/dev/null", stdout=subprocess.PIPE)
    read_until_listening(receiver.stdout)
    sent = run_vsockctl("send", "--cid", "1", "--port", str(port), "--size", str(size))
    assert sent.returncode == 0, sent.stderr
    assert receiver.wait(timeout=60) == 0
    assert receiver.stdout is not None
    receiver.stdout.close()
    time.sleep(0.5)  # the last resets


@pytest.fixture(scope="module")
def transfer_pcap(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """A pcap of one transfer of 1 MiB + 1234 bytes written by -w: (file, port, size)."""
    path = tmp_path_factory.mktemp("capture") / "transfer.pcap"
    port, size = free_port(), (1 << 20) + 1234
    with Capture("--port", str(port), "-w", str(path)) as cap:
        transfer(port, size)
        rc, records, err = cap.stop()
    assert rc == ExitStatus.INTERRUPTED, err
    (done,) = of(records, "capture_done")
    assert done["dropped"] == 0 and done["matched"] > 0
    return path, port, size


def test_a_connect_to_a_closed_port_is_request_then_rst() -> None:
    port = free_port()
    with Capture("--port", str(port), "-c", "2") as cap:
        refused = run_vsockctl("connect", f"1:{port}", input=b"")
        rc, records, err = cap.stop(0)
    assert refused.returncode == ExitStatus.CONNECTION_REFUSED
    assert rc == 0, err
    request, reset = of(records, "packet")
    assert (request["op"], reset["op"]) == ("REQUEST", "RST")
    assert request["dst"] == reset["src"] == f"1:{port}"
    assert request["src"] == reset["dst"] and request["type"] == "stream"
    (done,) = of(records, "capture_done")
    assert (done["matched"], done["dropped"]) == (2, 0)


def test_a_transfer_is_its_bytes_in_rw_then_shutdown_then_rst(
    transfer_pcap: tuple[Path, int, int],
) -> None:
    path, port, size = transfer_pcap
    packets = of(read_back(path), "packet")
    ops = [p["op"] for p in packets]
    assert ops[:2] == ["REQUEST", "RESPONSE"], ops
    client = packets[0]["src"]
    rw = [p for p in packets if p["op"] == "RW"]
    assert {p["src"] for p in rw} == {client}
    assert sum(p["payload_bytes"] for p in rw) == size
    first_shutdown = ops.index("SHUTDOWN")
    assert first_shutdown > ops.index("RW") and "RW" not in ops[first_shutdown:]
    assert packets[first_shutdown]["src"] == client and "SEND" in packets[first_shutdown]["flags"]
    assert ops[-1] == "RST" and set(ops[first_shutdown:]) <= {"SHUTDOWN", "RST", "CREDIT_UPDATE"}
    (conn,) = of(read_back(path, "--summary"), "connection")
    assert (conn["client"], conn["server"], conn["opened"]) == (client, f"1:{port}", "accepted")
    assert conn["ended"] and conn["closing"][0] == {
        "by": "client",
        "op": "SHUTDOWN",
        "flags": ["SEND"],
    }
    assert conn["from_client"]["payload_bytes"] == size
    assert conn["from_server"]["payload_bytes"] == 0


def tshark_fields(path: Path) -> list[tuple[int, ...]]:
    fields = ["vsock.src_cid", "vsock.src_port", "vsock.dst_cid", "vsock.dst_port"]
    fields += [f"vsock.virtio.{f}" for f in ("type", "op", "flags", "len", "buf_alloc", "fwd_cnt")]
    args = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=,"]
    done = subprocess.run([*args, *(x for f in fields for x in ("-e", f))],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return [tuple(int(v, 0) for v in line.split(",")) for line in done.stdout.splitlines()]


def our_fields(packets: list[Record]) -> list[tuple[int, ...]]:
    flag_bits = {"RCV": 1, "SEND": 2, "EOM": 1, "EOR": 2}
    return [
        (
            p["src_cid"],
            p["src_port"],
            p["dst_cid"],
            p["dst_port"],
            {"stream": 1, "seqpacket": 2}[p["type"]],
            Op[p["op"]].value,
            sum(flag_bits[f] for f in p["flags"]),
            p["payload_bytes"],
            p["buf_alloc"],
            p["fwd_cnt"],
        )
        for p in packets
    ]


def test_tshark_reads_our_pcap_as_we_do(transfer_pcap: tuple[Path, int, int]) -> None:
    path, _, _ = transfer_pcap
    ours = our_fields(of(read_back(path), "packet"))
    assert len(ours) > 10
    assert tshark_fields(path) == ours


def test_a_tcpdump_capture_reads_back_to_the_same_records(tmp_path: Path) -> None:
    port, dumped = free_port(), tmp_path / "tcpdump.pcap"
    with Capture("--port", str(port)) as cap:
        tcpdump = subprocess.Popen(
            ["tcpdump", "-i", cap.first["interface"], "-w", str(dumped), "--immediate-mode"],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert tcpdump.stderr is not None
        assert "listening on" in tcpdump.stderr.readline()
        transfer(port, 300_000)
        tcpdump.send_signal(signal.SIGINT)
        tcpdump.communicate(timeout=30)
        rc, records, err = cap.stop()
    assert rc == ExitStatus.INTERRUPTED, err
    live = of(records, "packet")
    assert len(live) > 5
    from_file = of(read_back(dumped, "--port", str(port)), "packet")
    for record in (*live, *from_file):
        record["time_ns"] //= 1000  # pcap keeps microseconds
    assert len(from_file) == len(live)
    for ours, theirs in zip(live, from_file, strict=True):
        assert theirs == ours, {k: (v, theirs[k]) for k, v in ours.items() if theirs[k] != v}
    pcapng = tmp_path / "tshark.pcapng"  # tshark's own format, converted by tshark
    subprocess.run(["tshark", "-r", str(dumped), "-F", "pcapng", "-w", str(pcapng)],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    from_pcapng = of(read_back(pcapng, "--port", str(port)), "packet")
    for record in from_pcapng:
        record["time_ns"] //= 1000
    assert from_pcapng == from_file


@pytest.mark.kernel_features
def test_100_seqpacket_messages_are_100_eoms() -> None:
    port = free_port()
    listener, sizes = seqpacket_receiver(port)
    with listener, Capture("--port", str(port), "--summary") as cap:
        sent = run_vsockctl("send", "--to", f"1:{port}", "--type", "seqpacket",
                            "--message-size", "100K", "--count", "100")  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        deadline = time.monotonic() + 30
        while len(sizes) < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        rc, records, err = cap.stop()
    assert rc == ExitStatus.INTERRUPTED, err
    assert sizes == [100 * 1024] * 100
    (conn,) = of(records, "connection")
    assert conn["type"] == "seqpacket"
    sent_side = conn["from_client"]
    assert sent_side["messages"] == 100
    assert sent_side["message_min_bytes"] == sent_side["message_max_bytes"] == 100 * 1024
    assert sent_side["payload_bytes"] == 100 * 100 * 1024


def test_a_receiver_that_stops_reading_shows_as_a_full_window(tmp_path: Path) -> None:
    port, path = free_port(), tmp_path / "stall.pcap"
    listener = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    listener.bind((socket.VMADDR_CID_ANY, port))
    listener.listen(1)
    with listener, Capture("--port", str(port), "--follow", "-w", str(path)) as cap:
        client = connect_local(port)
        server, _ = listener.accept()
        client.setblocking(False)
        sent = 0
        try:
            while True:
                sent += client.send(bytes(65536))
        except BlockingIOError:
            pass  # the receiver's buffer is full: its reader does not read
        time.sleep(3)
        got = 0
        while got < sent:
            got += len(server.recv(1 << 20))
        client.close()
        server.close()
        time.sleep(0.5)
        rc, records, err = cap.stop()
    assert rc == ExitStatus.INTERRUPTED, err
    windows = of(records, "window")
    assert [w["full"] for w in windows[:2]] == [True, False], windows
    assert windows[0]["sender"] == "client" and windows[0]["free_bytes"] <= 0
    (conn,) = of(records, "connection")
    assert conn["from_client"]["payload_bytes"] == sent
    assert conn["from_client"]["window_full_times"] >= 1
    assert conn["from_client"]["window_full_share"] > 0.5
    assert conn["from_client"]["window_full_ns"] > 2_500_000_000
    summary = run_vsockctl("capture", "-r", str(path), "--summary")
    assert summary.returncode == 0
    text = summary.stdout.decode()
    print(text)  # the closing note's example
    assert "client → server:" in text and "receiver window full" in text
    share = round(conn["from_client"]["window_full_share"] * 100)
    assert f"receiver window full {share}% of the time" in text


def _vsockmon_loaded() -> bool:
    return Path("/sys/module/vsockmon").is_dir()


def test_what_it_added_is_taken_back_on_sigterm() -> None:
    subprocess.run(["modprobe", "-r", "vsockmon"], capture_output=True, check=False)
    if _vsockmon_loaded():
        pytest.skip("vsockmon is in use here")
    with Capture() as cap:
        first = cap.first
        assert first["link_created"] and first["module_loaded"]
        assert (SYS_NET / first["interface"]).exists()
        rc, _, err = cap.stop(signal.SIGTERM)
    assert rc == ExitStatus.TERMINATED, err
    assert not (SYS_NET / first["interface"]).exists()
    assert not _vsockmon_loaded()


def test_a_link_already_up_is_used_and_left_up() -> None:
    subprocess.run(["modprobe", "vsockmon"], check=True)
    subprocess.run(["ip", "link", "add", "name", "mon7", "type", "vsockmon"], check=True)
    try:
        subprocess.run(["ip", "link", "set", "mon7", "up"], check=True)
        with Capture("--duration", "2") as cap:
            assert (cap.first["interface"], cap.first["link_created"]) == ("mon7", False)
            rc, records, err = cap.stop(0)
        assert rc == 0, err  # --duration ended it
        assert 2e9 <= of(records, "capture_done")[0]["elapsed_ns"] < 30e9
        assert int((SYS_NET / "mon7" / "flags").read_text(), 0) & 1  # still up
    finally:
        subprocess.run(["ip", "link", "del", "mon7"], check=False)
        subprocess.run(["modprobe", "-r", "vsockmon"], capture_output=True, check=False)


def test_without_the_module_it_says_so_and_exits_3() -> None:
    subprocess.run(["modprobe", "-r", "vsockmon"], capture_output=True, check=False)
    if _vsockmon_loaded():
        pytest.skip("vsockmon is in use here")
    modules = Path("/lib/modules") / os.uname().release / "kernel/drivers/net"
    hide = f'mount -t tmpfs none {modules} && exec "$0" -m vsockctl capture'
    done = subprocess.run(["unshare", "-m", "sh", "-c", hide, sys.executable],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == ExitStatus.VSOCK_UNAVAILABLE, done.stderr
    assert done.stderr.count("\n") == 1
    assert "'modprobe vsockmon' failed" in done.stderr


def test_a_pcap_on_stdout_goes_into_tcpdump() -> None:
    port = free_port()
    capture = vsockctl(
        "--json", "capture", "--port", str(port), "-c", "2", "-w", "-",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert capture.stderr is not None
    assert b'"capturing"' in capture.stderr.readline()  # records go to stderr: stdout is the pcap
    refused = run_vsockctl("connect", f"1:{port}", input=b"")
    assert refused.returncode == ExitStatus.CONNECTION_REFUSED
    pcap, err = capture.communicate(timeout=60)
    assert capture.returncode == 0, err
    assert json_records(err)[-1]["written_bytes"] == len(pcap)
    read = subprocess.run(["tcpdump", "-v", "-r", "-"], input=pcap, capture_output=True, timeout=60)
    said = read.stdout.decode()
    assert said.count("VIRTIO") == 2, said
    assert said.index("op REQUEST") < said.index("op RST"), said
