"""``vsockctl capture``: every packet of the kernel's vsock transports, as lines, JSON or pcap,
and each connection's flow control."""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from vsockctl.capture.flows import Change, Connection, Event, Flows
from vsockctl.capture.packet import HEADERS, Op, Packet, PacketType, Selection
from vsockctl.capture.pcap import DEFAULT_SNAPLEN, PcapError, PcapWriter, Record, read_records
from vsockctl.capture.session import Frame, Session
from vsockctl.errors import LocalIOError
from vsockctl.signals import stop_after_loop
from vsockctl.transfer.streams import OutputFile, StreamSink

from . import capture_view as view
from .app import cli
from .env import Env, current_env
from .format import plural
from .options import CID, DURATION, LOCAL_FILE, PORT, SIZE, WholeRange, output_options

if TYPE_CHECKING:
    from vsockctl.capture.link import Monitor

OPS = [op.name for op in Op]


class Output:
    """Where a capture's packets and reports go: lines or records, and the end."""

    def __init__(self, env: Env, *, follow: bool) -> None:
        self.env = env
        self.follow = follow

    def _write(self, text: str) -> None:
        try:
            self.env.stdout.write(text.encode() + b"\n")
        except OSError as exc:
            raise LocalIOError.wrap(exc, "writing", "stdout") from exc

    def packet(self, packet: Packet) -> None:
        if self.env.json:
            self.env.emit(view.packet_record(packet))
        else:
            self._write(view.packet_line(packet))

    def event(self, event: Event) -> None:
        """--follow: windows filling and opening, connections ending."""
        now = event.connection.last_ns
        if not self.follow or event.change is Change.OPENED:
            return
        if event.change is Change.ENDED:
            self.connection_report(event.connection.ended_ns or now, [event.connection])
        elif self.env.json:
            self.env.emit(view.window_record(event, now))
        else:
            self._write(view.window_line(event, now))

    def connection_report(self, now_ns: int, connections: list[Connection]) -> None:
        for conn in connections:
            if self.env.json:
                self.env.emit(view.connection_record(conn, now_ns))
            else:
                self._write("\n".join(view.connection_lines(conn, now_ns)))

    def flush(self) -> None:
        if not self.env.json:
            try:
                self.env.stdout.flush()
            except OSError as exc:
                raise LocalIOError.wrap(exc, "writing", "stdout") from exc


def _check(
    *, read_file: str | None, interface: str | None, duration: float | None,
    summary: bool, follow: bool, snaplen: int | None,
) -> None:  # fmt: skip
    if read_file is not None and interface is not None:
        raise click.UsageError("-r reads a file, -i a link: give one")
    if read_file is not None and duration is not None:
        raise click.UsageError("--duration is for a live capture, not -r")
    if summary and follow:
        raise click.UsageError("--follow reports as connections end, --summary at the end")
    if snaplen is not None and snaplen < HEADERS:
        raise click.UsageError(f"--snaplen must be at least {HEADERS} (the two headers)")


@contextlib.contextmanager
def _pcap_out(env: Env, path: str | None, snaplen: int) -> Iterator[PcapWriter | None]:
    """-w's writer: FILE written in place (kept as it was if nothing came), or stdout."""
    if path is None:
        yield None
        return
    to_stdout = path == "-"
    if to_stdout:
        env.events_to_stderr = True
    out = StreamSink(env.stdout, "stdout") if to_stdout else OutputFile(path)
    writer = PcapWriter(out, snaplen)
    complete = False
    try:
        yield writer
        complete = True
    finally:
        try:
            if complete or to_stdout:  # a pipe gets a whole pcap, if an empty one
                writer.finish()
            elif writer.records:
                writer.flush()  # Ctrl-C, SIGTERM, an error: the packets so far are kept
            out.flush()
        finally:
            if isinstance(out, OutputFile):
                out.close(complete)


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
    """-r's failures as one line about FILE (exit 1)."""
    try:
        yield
    except PcapError as exc:
        raise LocalIOError(errno.EINVAL, "reading", path, str(exc)) from exc
    except OSError as exc:
        raise LocalIOError.wrap(exc, "reading", path) from exc


def _file_frames(records: Iterator[Record], path: str) -> Iterator[Frame]:
    with _reading(path):
        for record in records:
            yield record.time_ns, record.data, record.frame_bytes


@cli.command("capture", short_help="See every vsock packet; write pcap; follow flow control.")
@click.option(
    "-i", "--interface", metavar="NAME",
    help="The vsockmon link to read. Default: one that is up, else one added for this "
    "capture and removed after it.",
)  # fmt: skip
@click.option(
    "-r", "--read", "read_file", type=LOCAL_FILE, metavar="FILE",
    help="Read packets from a pcap or pcapng FILE (tcpdump's, tshark's, ours) instead.",
)  # fmt: skip
@click.option(
    "-w", "--write", "write_file", type=LOCAL_FILE, metavar="FILE",
    help="Write the packets to FILE as pcap (link type DLT_VSOCK, 271) for tcpdump, "
    "tshark and Wireshark; '-' for stdout. Lines are not printed then.",
)  # fmt: skip
@click.option("-c", "--count", type=WholeRange(min=1), help="Stop after COUNT matching packets.")
@click.option("--duration", type=DURATION, help="Stop after this long (10s, 2m).")
@click.option("--cid", type=CID, help="Only packets from or to this CID.")
@click.option("--port", type=PORT, help="Only packets from or to this port.")
@click.option(
    "-t", "--type", "sock_type",
    type=click.Choice(["stream", "seqpacket"], case_sensitive=False),
    help="Only packets of this socket type.",
)  # fmt: skip
@click.option(
    "--op", "ops", multiple=True, type=click.Choice(OPS, case_sensitive=False),
    help="Only packets of this op (repeat for more): " + ", ".join(OPS) + ".",
)  # fmt: skip
@click.option(
    "--follow", is_flag=True,
    help="Instead of packets: each connection's report as it ends, and its sender's "
    "window as it fills up and opens again.",
)  # fmt: skip
@click.option(
    "--summary", is_flag=True,
    help="Instead of packets: a report of every connection when the capture ends.",
)  # fmt: skip
@click.option(
    "-s", "--snaplen", type=SIZE,
    help=f"Bytes kept of each packet. Default: {HEADERS} (the headers), "
    f"{DEFAULT_SNAPLEN} with -w.",
)  # fmt: skip
@output_options
def capture_command(
    *, interface: str | None, read_file: str | None, write_file: str | None,
    count: int | None, duration: float | None, cid: int | None, port: int | None,
    sock_type: str | None, ops: tuple[str, ...], follow: bool, summary: bool,
    snaplen: int | None,
) -> None:  # fmt: skip
    """Capture vsock packets on a vsockmon link: one line per packet with its time,
    transport, socket type, source and destination CID:PORT, op and flags by
    name, payload length, and the sender's credit (buf_alloc, fwd_cnt).

    Needs root (CAP_NET_ADMIN and CAP_NET_RAW). Without a vsockmon link up it
    loads the vsockmon module, adds one, and takes both back when it ends,
    Ctrl-C and SIGTERM included. The kernel's virtio-family transports show
    there: loopback (CID 1), vhost on a KVM host, the virtio driver in a guest.
    Userspace muxes (Firecracker, Cloud Hypervisor, vhost-device-vsock) do not:
    their packets never pass the kernel's vsock core. Without root or without
    vsockmon the exit status is 3.

    --follow and --summary report each connection: packets and bytes each way,
    how it opened (accepted, refused) and closed (which SHUTDOWN flags, who
    reset), seqpacket messages, and flow control: the credit a sender had
    (buf_alloc - (bytes sent - fwd_cnt)) and how long it had none, which is a
    receiver not reading ('receiver window full 93% of the time').

    Ctrl-C ends a live capture: the file is complete, the reports printed, and
    the exit status 130 (143 for SIGTERM), so a script can tell it from one that
    ended by -c or --duration.

    \b
    Examples:
      vsockctl capture
      vsockctl capture --port 5000 -c 20
      vsockctl capture -w vsock.pcap          then: tshark -r vsock.pcap
      vsockctl capture -r vsock.pcap --summary
      vsockctl capture --follow --cid 3
      vsockctl capture --op RST --json | jq .src
    """
    _check(
        read_file=read_file, interface=interface, duration=duration,
        summary=summary, follow=follow, snaplen=snaplen,
    )  # fmt: skip
    env = current_env()
    selection = Selection(
        cid, port,
        None if sock_type is None else PacketType[sock_type.upper()].value,
        frozenset(Op[name.upper()].value for name in ops),
    )  # fmt: skip
    snaplen = snaplen or (DEFAULT_SNAPLEN if write_file is not None else HEADERS)
    output = Output(env, follow=follow)
    flows = Flows() if summary or follow else None
    quiet_packets = write_file is not None or flows is not None
    session = Session(
        selection, flows,
        on_packet=None if quiet_packets else output.packet,
        on_event=output.event if flows is not None else None,
        limit=count,
    )  # fmt: skip
    started = time.monotonic_ns()
    try:
        with _pcap_out(env, write_file, snaplen) as writer:
            session.writer = writer
            if read_file is not None:
                _from_file(env, session, read_file, write_file, snaplen)
            else:
                _live(env, session, interface, write_file, snaplen, duration, output)
    finally:
        if session.started:  # else the file, the link or the module failed: the error says which
            if flows is not None:  # the end of a file is its last packet; of a live one, now
                now = session.counts.last_ns if read_file is not None else time.time_ns()
                to_report = list(flows.live.values()) if follow else flows.every()
                output.connection_report(now, to_report)
            output.flush()
            _done(env, session, flows, started)


def _from_file(env: Env, session: Session, path: str, write_file: str | None, snaplen: int) -> None:
    with _reading(path):
        stream = open(path, "rb")  # noqa: SIM115 (closed below)
    with stream:
        with _reading(path):
            records = read_records(stream)
        _started(env, session, None, path if write_file is None else write_file, snaplen)
        session.run(_file_frames(records, path))


def _live(
    env: Env, session: Session, interface: str | None, write_file: str | None,
    snaplen: int, duration: float | None, output: Output,
) -> None:  # fmt: skip
    from vsockctl.capture.link import monitor  # a capture's own: netlink, modprobe
    from vsockctl.capture.live import LiveCapture

    with monitor(interface) as link:
        live = LiveCapture(link.interface, snaplen)
        try:
            _started(env, session, link, write_file, snaplen)
            until = None if duration is None else time.monotonic() + duration

            def idle() -> None:
                if session.writer is not None:
                    session.writer.flush()
                output.flush()

            into = session.writer.slot if session.writer is not None else None
            with stop_after_loop(live.sock):  # Ctrl-C: what came before it is read first
                session.run(live.frames(until, idle, into))
        finally:
            session.counts.dropped = live.count()[1]
            live.close()


def _started(
    env: Env, session: Session, link: Monitor | None, file: str | None, snaplen: int
) -> None:
    session.started = True
    if env.json:
        env.emit(
            {
                "event": "capturing",
                "interface": link.interface if link else None,
                "link_created": bool(link and link.created),
                "module_loaded": bool(link and link.module_loaded),
                "file": file,
                "snaplen_bytes": snaplen,
            }
        )
        return
    if link is None:
        return
    added = " (added for this capture, removed after it)" if link.created else ""
    env.message(f"capturing on {link.interface}{added}; Ctrl-C to stop")


def _done(env: Env, session: Session, flows: Flows | None, started: int) -> None:
    counts = session.counts
    dropped = counts.dropped
    written = session.writer.written if session.writer is not None else None
    if env.json:
        env.emit(
            {
                "event": "capture_done",
                "packets": counts.packets,
                "matched": counts.matched,
                "dropped": dropped,
                "written_bytes": written,
                "connections": flows.seen if flows else 0,
                "elapsed_ns": time.monotonic_ns() - started,
            }
        )
        return
    line = f"{plural(counts.packets, 'packet')}, {counts.matched} matched"
    if dropped is not None:
        line += f", {dropped} dropped by the kernel"
    if counts.malformed:
        line += f", {counts.malformed} too short to decode"
    env.message(line)
