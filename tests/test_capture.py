"""capture's parts on the host: frames decoded by the layout in vsockmon.h and virtio_vsock.h,
pcap written for tshark and read back, credit followed, and the failures before any packet.

No packet is captured here (the host's vsock belongs to the machine that runs it): frames
are built from the documented layout, and tshark, a real decoder, checks the files. The
VM tier (test_vm_capture.py) captures real traffic.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import Invoke
from tests.peers import vsockctl_args
from tests.records import json_records
from vsockctl.capture.flows import Change, Flows, Opened
from vsockctl.capture.packet import HEADERS, MONITOR_HEADER, VIRTIO_HEADER, Op, decode
from vsockctl.capture.pcap import LINKTYPE_VSOCK, PcapError, PcapWriter, read_records
from vsockctl.discover.kmod import ModuleState, module_state
from vsockctl.exit_status import ExitStatus

SECOND = 1_000_000_000


def frame(
    src: tuple[int, int], dst: tuple[int, int], op: Op, *, length: int = 0, flags: int = 0,
    buf_alloc: int = 262144, fwd_cnt: int = 0, sock_type: int = 1, payload: bool = True,
) -> bytes:  # fmt: skip
    """A vsockmon frame as the kernel builds one (virtio_transport_build_skb)."""
    monitor_op = {Op.REQUEST: 1, Op.RESPONSE: 1, Op.RST: 2, Op.SHUTDOWN: 2, Op.RW: 4}.get(op, 3)
    head = MONITOR_HEADER.pack(src[0], dst[0], src[1], dst[1], monitor_op, 2, VIRTIO_HEADER.size)
    virtio = VIRTIO_HEADER.pack(
        src[0], dst[0], src[1], dst[1], length, sock_type, op, flags, buf_alloc, fwd_cnt
    )
    return head + virtio + (bytes(length) if payload else b"")


CLIENT, SERVER = (3, 1025), (2, 5000)


def test_a_frame_decodes_to_its_fields_with_ops_and_flags_by_name() -> None:
    packet = decode(frame(CLIENT, SERVER, Op.SHUTDOWN, flags=3, fwd_cnt=77), 5)
    assert (packet.src, packet.dst, packet.op_name, packet.type_name) == (
        "3:1025", "2:5000", "SHUTDOWN", "stream",
    )  # fmt: skip
    assert (packet.flag_names, packet.fwd_cnt, packet.time_ns) == (["RCV", "SEND"], 77, 5)
    rw = decode(frame(CLIENT, SERVER, Op.RW, length=10, flags=3, sock_type=2), 0)
    assert (rw.flag_names, rw.ends_message, rw.length, rw.frame_bytes) == (
        ["EOM", "EOR"], True, 10, HEADERS + 10,
    )  # fmt: skip
    odd = decode(frame(CLIENT, SERVER, Op.RW, flags=0x10), 0)
    assert odd.flag_names == ["0x10"]


def test_a_frame_cut_by_the_snap_length_keeps_its_length() -> None:
    whole = frame(CLIENT, SERVER, Op.RW, length=65536)
    packet = decode(whole[:HEADERS], 0, len(whole))
    assert (packet.length, packet.frame_bytes) == (65536, len(whole))


def exchange() -> list[tuple[int, bytes]]:
    """A connection whose receiver stops reading for 3 s: its 4 KiB buffer fills, then
    it reads, then the client closes."""
    return [
        (0, frame(CLIENT, SERVER, Op.REQUEST, buf_alloc=4096)),
        (1, frame(SERVER, CLIENT, Op.RESPONSE, buf_alloc=4096)),
        (2, frame(CLIENT, SERVER, Op.RW, length=3000, buf_alloc=4096)),
        (3, frame(CLIENT, SERVER, Op.RW, length=1096, buf_alloc=4096)),  # 4096 in flight: full
        (3 * SECOND + 3, frame(SERVER, CLIENT, Op.CREDIT_UPDATE, fwd_cnt=4096, buf_alloc=4096)),
        (3 * SECOND + 4, frame(CLIENT, SERVER, Op.RW, length=100, buf_alloc=4096)),
        (3 * SECOND + 5, frame(CLIENT, SERVER, Op.SHUTDOWN, flags=2, buf_alloc=4096)),
        (3 * SECOND + 6, frame(SERVER, CLIENT, Op.RST, buf_alloc=0)),
    ]


def test_a_receiver_that_does_not_read_fills_the_window() -> None:
    flows = Flows()
    changes = []
    for when, data in exchange():
        changes += [(e.change, e.sender, e.free_bytes) for e in flows.add(decode(data, when))]
    assert changes == [
        (Change.OPENED, None, None),
        (Change.WINDOW_FULL, "client", 0),
        (Change.WINDOW_OPEN, "client", 4096),
        (Change.ENDED, None, None),
    ]
    (conn,) = flows.every()
    assert conn.opened is Opened.ACCEPTED and conn.ended_ns == 3 * SECOND + 6
    assert conn.client.payload_bytes == 4196 and conn.client.window_full_ns == 3 * SECOND
    assert conn.full_fraction(conn.client, conn.ended_ns) == pytest.approx(3 / 3.000000006)
    assert [(c.by, c.op, c.flags) for c in conn.closings] == [
        ("client", "SHUTDOWN", ("SEND",)), ("server", "RST", ()),
    ]  # fmt: skip
    assert conn.server.window_full_times == 0 and conn.server.min_free_bytes is None


def test_a_request_answered_by_a_reset_is_refused_without_a_window() -> None:
    flows = Flows()
    flows.add(decode(frame(CLIENT, SERVER, Op.REQUEST), 0))
    flows.add(decode(frame(SERVER, CLIENT, Op.RST, buf_alloc=0), 1))
    (conn,) = flows.every()
    assert conn.opened is Opened.REFUSED
    assert conn.client.window_full_times == 0


def test_seqpacket_messages_are_counted_at_each_eom() -> None:
    flows = Flows()
    flows.add(decode(frame(CLIENT, SERVER, Op.REQUEST, sock_type=2), 0))
    flows.add(decode(frame(SERVER, CLIENT, Op.RESPONSE, sock_type=2), 1))
    for length, flags in ((65536, 0), (100, 1), (7, 1), (5, 3)):
        flows.add(decode(frame(CLIENT, SERVER, Op.RW, length=length, flags=flags, sock_type=2), 2))
    client = flows.every()[0].client
    assert (client.messages, client.message_min_bytes, client.message_max_bytes) == (
        3, 5, 65636,
    )  # fmt: skip


def write_pcap(path: Path, frames: list[tuple[int, bytes]]) -> None:
    with path.open("wb") as out:
        writer = PcapWriter(out)  # type: ignore[arg-type]
        for when, data in frames:
            writer.add(when, data, len(data))
        writer.finish()


def test_our_pcap_reads_back_record_for_record(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    write_pcap(path, exchange())
    with path.open("rb") as stream:
        back = [(r.time_ns, r.data, r.frame_bytes) for r in read_records(stream)]
    # microseconds in the file
    assert back == [(when // 1000 * 1000, data, len(data)) for when, data in exchange()]


needs_tshark = pytest.mark.skipif(
    shutil.which("tshark") is None, reason="tshark is not installed (scripts/vm-packages)"
)


@needs_tshark
def test_tshark_decodes_our_pcap_field_for_field(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    write_pcap(path, exchange())
    fields = ["vsock.src_cid", "vsock.virtio.dst_prot", "vsock.virtio.op", "vsock.virtio.len",
              "vsock.virtio.flags", "vsock.virtio.buf_alloc", "vsock.virtio.fwd_cnt"]  # fmt: skip
    args = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=,"]
    done = subprocess.run([*args, *(x for f in fields for x in ("-e", f))],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    theirs = [tuple(int(v, 0) for v in line.split(",")) for line in done.stdout.splitlines()]
    ours = [decode(data, 0) for _, data in exchange()]
    assert theirs == [
        (p.src_cid, p.dst_port, p.op, p.length, p.flags, p.buf_alloc, p.fwd_cnt) for p in ours
    ]


@needs_tshark
def test_a_pcapng_from_tshark_reads_as_the_pcap_it_came_from(tmp_path: Path) -> None:
    path, converted = tmp_path / "x.pcap", tmp_path / "x.pcapng"
    write_pcap(path, exchange())
    subprocess.run(["tshark", "-r", str(path), "-F", "pcapng", "-w", str(converted)],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    assert converted.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    with path.open("rb") as a, converted.open("rb") as b:
        assert list(read_records(b)) == list(read_records(a))


def test_a_pcap_of_another_link_type_is_refused_at_once() -> None:
    ethernet = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    with pytest.raises(PcapError, match="link type 1, not vsock"):
        read_records(io.BytesIO(ethernet))
    assert LINKTYPE_VSOCK == 271


def test_reading_a_file_reports_its_packets_and_connections(invoke: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    write_pcap(path, exchange())
    lines = invoke(["capture", "-r", str(path)])
    assert lines.exit_code == 0, lines.stderr
    assert lines.stdout.count("\n") == 8
    assert "3:1025 → 2:5000 SHUTDOWN [SEND] len 0" in lines.stdout
    summary = invoke(["capture", "-r", str(path), "--summary"])
    assert "stream 3:1025 → 2:5000: accepted, closed by client SHUTDOWN SEND → server RST" in (
        summary.stdout
    )
    assert "receiver window full 100% of the time (1 time, 3.00 s)" in summary.stdout
    records = json_records(invoke(["--json", "capture", "-r", str(path), "--op", "RW"]).stdout)
    assert [r["event"] for r in records] == [
        "capturing",
        "packet",
        "packet",
        "packet",
        "capture_done",
    ]
    assert records[-1]["matched"] == 3 and records[-1]["packets"] == 8
    filtered = invoke(["capture", "-r", str(path), "--port", "9", "-c", "1"])
    assert filtered.stdout == "" and "8 packets, 0 matched" in filtered.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-r", "F", "-i", "vsockmon0"], "-r reads a file, -i a link"),
        (["-r", "F", "--duration", "1s"], "--duration is for a live capture"),
        (["--summary", "--follow"], "--follow reports as connections end"),
        (["-s", "20"], "--snaplen must be at least 76"),
        (["--op", "PUSH"], "'PUSH' is not one of"),
    ],
)
def test_options_that_cannot_be_are_one_line_exit_2(
    invoke: Invoke, args: list[str], says: str
) -> None:
    result = invoke(["capture", *args])
    assert result.exit_code == ExitStatus.USAGE
    assert says in result.stderr and result.stderr.count("\n") == 1


def test_a_file_that_is_not_a_pcap_is_one_line_exit_1(invoke: Invoke, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    for path, says in ((text, "not a pcap or pcapng file"), (tmp_path / "no", "No such file")):
        result = invoke(["capture", "-r", str(path)])
        assert result.exit_code == ExitStatus.ERROR
        assert says in result.stderr and result.stderr.count("\n") == 1
    cut = tmp_path / "cut.pcap"
    write_pcap(cut, exchange())
    cut.write_bytes(cut.read_bytes()[:-10])
    result = invoke(["capture", "-r", str(cut)])
    assert result.exit_code == ExitStatus.ERROR and "ends inside a packet" in result.stderr
    assert result.stdout.count("\n") == 7  # what came before the cut


def test_without_root_it_says_so_exits_3_and_keeps_the_file() -> None:
    directory = Path(tempfile.mkdtemp(prefix="vsockctl-capture-"))
    directory.chmod(0o777)
    kept = directory / "old.pcap"
    kept.write_bytes(b"an earlier capture")
    kept.chmod(0o666)
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if os.geteuid() != 0:
        prefix = []  # already without root
    try:
        args = [*prefix, *vsockctl_args("capture", "-w", str(kept))]
        result = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert result.returncode == ExitStatus.VSOCK_UNAVAILABLE, result.stderr
        assert result.stderr.count("\n") == 1
        assert "capture needs root (CAP_NET_ADMIN and CAP_NET_RAW" in result.stderr
        assert "run it with sudo" in result.stderr
        assert kept.read_bytes() == b"an earlier capture"
        new = directory / "new.pcap"
        subprocess.run([*prefix, *vsockctl_args("capture", "-w", str(new))],
                       capture_output=True, timeout=60)  # fmt: skip
        assert not new.exists()
    finally:
        shutil.rmtree(directory)


def test_without_the_module_it_says_why_and_exits_3(invoke: Invoke) -> None:
    state = module_state("vsockmon")
    if state not in (ModuleState.ABSENT, ModuleState.UNKNOWN):
        pytest.skip(f"vsockmon is {state} here: capturing would watch this machine's vsock")
    if os.geteuid() != 0:
        pytest.skip("needs root to get past the capability check")
    result = invoke(["capture"])
    assert result.exit_code == ExitStatus.VSOCK_UNAVAILABLE
    assert result.stderr.startswith("vsockctl: capture needs the vsockmon module; ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_file_filtered_into_another_keeps_the_chosen_records(
    invoke: Invoke, tmp_path: Path
) -> None:
    source, kept = tmp_path / "all.pcap", tmp_path / "rw.pcap"
    write_pcap(source, exchange())
    result = invoke(["capture", "-r", str(source), "--op", "RW", "-w", str(kept)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # -w: no lines
    with source.open("rb") as a, kept.open("rb") as b:
        rw = [r for r in read_records(a) if decode(r.data, 0).op == Op.RW]
        assert list(read_records(b)) == rw and len(rw) == 3


def test_stdout_closed_full_or_gone_is_one_line_or_141(tmp_path: Path) -> None:
    """capture -r's lines into a closed stdout, /dev/full and a pipe whose reader left."""
    path = tmp_path / "x.pcap"
    write_pcap(path, exchange())
    args = vsockctl_args("capture", "-r", str(path))

    def run(**kwargs: object) -> tuple[int, str]:
        done = subprocess.run(args, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,  # type: ignore[call-overload]
                              text=True, timeout=60, **kwargs)  # fmt: skip
        assert "Traceback" not in done.stderr
        return int(done.returncode), str(done.stderr)

    status, err = run(preexec_fn=lambda: os.close(1))
    assert status == ExitStatus.ERROR
    assert err.endswith("vsockctl: writing stdout failed: stdout is closed (<&- or >&-)\n"), err
    with open("/dev/full", "wb") as full:
        status, err = run(stdout=full)
    assert status == ExitStatus.ERROR
    assert err.endswith("vsockctl: writing stdout failed: No space left on device\n"), err
    assert err.count("vsockctl:") == 1
    read, write = os.pipe()
    os.close(read)
    try:
        status, err = run(stdout=write)
    finally:
        os.close(write)
    assert status == ExitStatus.PIPE_CLOSED
    assert "Broken pipe" not in err and "vsockctl:" not in err
