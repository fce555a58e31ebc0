"""The transfer engine over real sockets (socketpair), files and /dev/full."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.peers import pattern, recv_all
from vsockctl.errors import LocalIOError
from vsockctl.transfer.engine import Transfer
from vsockctl.transfer.stats import TransferStats
from vsockctl.transfer.streams import NullSink, PatternSource, StreamSink, StreamSource


class SlowPipeSource:
    """A piped source that is still producing after the peer has closed its side."""

    name = "slow pipe"
    total = None
    kernel_fd = None

    def __init__(self, data: bytes, started: threading.Event) -> None:
        self.data = memoryview(data)
        self.started = started

    def readinto(self, buf: memoryview) -> int:
        self.started.wait(10)
        n = min(len(buf), len(self.data), 4096)
        buf[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


Pair = Callable[..., tuple[socket.socket, socket.socket]]


@pytest.fixture
def pair() -> Iterator[Pair]:
    """``pair()`` or ``pair(AF_UNIX, SOCK_SEQPACKET)``: socketpairs closed after the test."""
    made: list[socket.socket] = []

    def make(*args: int) -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair(*args)
        made.extend((a, b))
        return a, b

    yield make
    for sock in made:
        sock.close()


def test_stream_round_trip_with_digests(pair: Pair) -> None:
    data = pattern(3 * 1024 * 1024 + 17)
    a, b = pair()
    sent, got = TransferStats(), TransferStats()
    out = io.BytesIO()

    def receiver() -> None:
        Transfer(got, sha256=True).receive_stream(b, StreamSink(out, "memory"), 7000)

    thread = threading.Thread(target=receiver)
    thread.start()
    Transfer(sent, sha256=True).send_stream(a, StreamSource(io.BytesIO(data), "memory"), 65536)
    a.shutdown(socket.SHUT_WR)
    thread.join(10)
    assert out.getvalue() == data
    assert sent.sent_bytes == got.received_bytes == len(data)
    assert sent.sent_sha256 == got.received_sha256 == hashlib.sha256(data).hexdigest()


def test_relay_sends_all_piped_input_after_the_peer_half_closes(pair: Pair) -> None:
    """The peer shuts its side at once; our piped input must still arrive whole."""
    data = pattern(200_000)
    ours, peer = pair()
    peer.shutdown(socket.SHUT_WR)  # the peer says nothing and half-closes first
    started = threading.Event()
    stats = TransferStats()
    collected: list[bytes] = []
    reader = threading.Thread(target=lambda: collected.append(recv_all(peer)))
    reader.start()
    relay_thread = threading.Thread(
        target=Transfer(stats).relay, args=(ours, SlowPipeSource(data, started), NullSink())
    )
    relay_thread.start()
    started.set()
    relay_thread.join(10)
    reader.join(10)
    assert collected == [data]
    assert stats.sent_bytes == len(data) and stats.received_bytes == 0


def test_relay_without_source_only_receives_and_never_half_closes(pair: Pair) -> None:
    ours, peer = pair()
    peer.sendall(b"hello")
    peer.shutdown(socket.SHUT_WR)
    out = io.BytesIO()
    Transfer().relay(ours, None, StreamSink(out, "memory"))
    assert out.getvalue() == b"hello"
    ours.sendall(b"still open")  # the relay did not shut our writing side down
    assert peer.recv(100) == b"still open"


def test_messages_keep_boundaries_and_count_sizes(pair: Pair) -> None:
    a, b = pair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    data = pattern(10 * 1000 + 123)
    sent, got = TransferStats(), TransferStats()
    out = io.BytesIO()
    thread = threading.Thread(
        target=Transfer(got).receive_messages, args=(b, StreamSink(out, "memory")), daemon=True
    )
    thread.start()
    Transfer(sent).send_messages(a, StreamSource(io.BytesIO(data), "memory"), 1000)
    a.shutdown(socket.SHUT_WR)
    thread.join(10)
    assert out.getvalue() == data
    assert sent.sent_messages == got.received_messages == 11
    assert got.message_sizes == {1000: 10, 123: 1}


def test_count_stops_after_that_many_messages(pair: Pair) -> None:
    a, _ = pair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stats = TransferStats()
    Transfer(stats).send_messages(a, PatternSource(10_000, "counter"), 100, count=7)
    assert stats.sent_messages == 7 and stats.sent_bytes == 700


def test_a_message_longer_than_the_buffer_is_counted_as_truncated(pair: Pair) -> None:
    a, b = pair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.send(b"x" * 5000)
    a.send(b"y" * 10)
    a.shutdown(socket.SHUT_WR)
    stats = TransferStats()
    out = io.BytesIO()
    Transfer(stats).receive_messages(b, StreamSink(out, "memory"), 4096)
    assert stats.truncated_messages == 1
    assert stats.message_sizes == {5000: 1, 10: 1}
    assert out.getvalue() == b"x" * 4096 + b"y" * 10


def test_received_data_are_flushed_when_the_sink_fails(pair: Pair) -> None:
    a, b = pair()
    a.sendall(b"z" * 100_000)
    a.shutdown(socket.SHUT_WR)
    with open("/dev/full", "wb", buffering=0) as full, pytest.raises(LocalIOError) as info:
        Transfer().receive_stream(b, StreamSink(full, "/dev/full"), 4096)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == "writing /dev/full failed: No space left on device"


def test_peer_gone_mid_send_is_a_vsock_error_with_partial_stats(pair: Pair) -> None:
    a, b = pair()
    b.close()
    stats = TransferStats()
    with pytest.raises(OSError) as info:
        Transfer(stats).send_stream(a, PatternSource(1 << 20))
    assert info.value.errno == errno.EPIPE
    assert getattr(info.value, "operation", None) == "send"
    assert stats.sent_bytes == 0


def test_drain_counts_until_close(pair: Pair) -> None:
    a, b = pair()
    b.sendall(b"ack")
    b.close()
    stats = TransferStats()
    Transfer(stats).drain(a)
    assert stats.received_bytes == 3


@settings(max_examples=50, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=100_000),
    chunk=st.integers(min_value=1, max_value=70_000),
)
def test_counter_pattern_is_position_checkable(size: int, chunk: int) -> None:
    source = PatternSource(size, "counter")
    view = memoryview(bytearray(chunk))
    out = bytearray()
    while n := source.readinto(view):
        out += view[:n]
    assert len(out) == size
    assert bytes(out) == bytes(i % 256 for i in range(size))


@pytest.mark.parametrize("kind", ["zero", "random"])
def test_patterns_give_exactly_size_bytes(kind: str) -> None:
    source = PatternSource(1_000_003, kind, seed=5)
    view = memoryview(bytearray(65536))
    digest = hashlib.sha256()
    total = 0
    while n := source.readinto(view):
        digest.update(view[:n])
        total += n
    assert total == 1_000_003
    again = PatternSource(1_000_003, kind, seed=5)
    digest2 = hashlib.sha256()
    while n := again.readinto(view):
        digest2.update(view[:n])
    assert digest.hexdigest() == digest2.hexdigest()
    if kind == "zero":
        assert digest.hexdigest() == hashlib.sha256(bytes(1_000_003)).hexdigest()


def test_file_source_knows_its_size(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1000)
    with path.open("rb") as stream:
        assert StreamSource(stream, str(path)).total == 3000
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as pipe_in:
        assert StreamSource(pipe_in, "pipe").total is None
    os.close(write_end)


@pytest.mark.parametrize("pattern", ["zero", "counter"])
def test_a_pattern_in_an_unchanged_buffer_is_not_written_again(pattern: str) -> None:
    source = PatternSource(5 * 4096, pattern)
    view = memoryview(bytearray(4096))
    assert source.readinto(view) == 4096
    first = bytes(view)
    view[0] = 0xEE  # a change the source cannot see: proof it did not write again
    assert source.readinto(view) == 4096
    assert view[0] == 0xEE and bytes(view[1:]) == first[1:]
    other = memoryview(bytearray(4096))  # another buffer is filled
    assert source.readinto(other) == 4096 and bytes(other) == first


def test_a_file_goes_out_by_sendfile_and_lands_by_splice(pair: Pair, tmp_path: Path) -> None:
    """File to file with no digest: the kernel copies (sendfile where it helps, splice
    through a pipe of our own into the file); every byte arrives, stats count them."""
    data = pattern(3 * 1024 * 1024 + 17)
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(data)
    a, b = pair()
    sent, got = TransferStats(), TransferStats()
    with src.open("rb") as reader, dst.open("wb", buffering=0) as writer:
        source, sink = StreamSource(reader, "src"), StreamSink(writer, "dst")
        assert source.kernel_fd == reader.fileno() and sink.kernel_fd == writer.fileno()
        thread = threading.Thread(target=Transfer(got).receive_stream, args=(b, sink, 65536))
        thread.start()
        Transfer(sent).send_stream(a, source, 100_000)
        a.shutdown(socket.SHUT_WR)
        thread.join(10)
    assert dst.read_bytes() == data
    assert sent.sent_bytes == got.received_bytes == len(data)


def test_splice_into_a_pipe_and_its_reader_leaving(pair: Pair) -> None:
    data = pattern(1 << 20)
    a, b = pair()
    r, w = os.pipe()
    with open(r, "rb") as reader, open(w, "wb", buffering=0) as writer:
        sink = StreamSink(writer, "stdout")
        assert sink.kernel_fd == w  # a pipe: spliced straight in
        collected: list[bytes] = []
        drained = threading.Thread(target=lambda: collected.append(reader.read()))
        drained.start()
        got = TransferStats()

        def send() -> None:
            a.sendall(data)
            a.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        Transfer(got).receive_stream(b, sink)
        sender.join(10)
        writer.close()
        drained.join(10)
    assert collected == [data] and got.received_bytes == len(data)

    c, d = pair()
    r, w = os.pipe()
    os.close(r)  # nobody reads: EPIPE is the sink's failure, not the peer's
    with open(w, "wb", buffering=0) as writer:
        c.sendall(b"x" * 1000)
        with pytest.raises(LocalIOError) as info:
            Transfer().receive_stream(d, StreamSink(writer, "stdout"))
    assert info.value.errno == errno.EPIPE and info.value.name == "stdout"


def test_a_file_opened_for_appending_is_written_without_splice(pair: Pair, tmp_path: Path) -> None:
    """``recv >> file``: splice(2) refuses O_APPEND, so the bytes go through write."""
    out = tmp_path / "log.bin"
    out.write_bytes(b"before|")
    a, b = pair()
    with out.open("ab", buffering=0) as appending:
        sink = StreamSink(appending, "stdout")
        assert sink.kernel_fd is None
        a.sendall(b"after")
        a.shutdown(socket.SHUT_WR)
        Transfer().receive_stream(b, sink)
    assert out.read_bytes() == b"before|after"


def test_splice_out_falls_back_to_read_and_write_where_splice_is_refused(tmp_path: Path) -> None:
    from vsockctl.transfer.kernel_copy import SpliceOut

    out = tmp_path / "appended.bin"
    with out.open("ab", buffering=0) as appending:  # splice(2) refuses O_APPEND: EINVAL
        splice_out = SpliceOut(appending.fileno(), 1 << 16, "appended.bin")
        try:
            for part in (b"first ", b"second"):
                os.write(splice_out.inlet, part)
                splice_out.push(len(part))
        finally:
            splice_out.close()
    assert out.read_bytes() == b"first second"
