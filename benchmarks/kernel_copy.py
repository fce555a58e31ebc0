"""Letting the kernel copy: sendfile(2) and splice(2) against plain loops, over CID 1.

Runs where vsock carries data over CID 1 (inside the test VM), on each kernel:

    scripts/vmrun 'python benchmarks/kernel_copy.py'
    scripts/vmrun --kernel 6.1 'python benchmarks/kernel_copy.py --size 128M'

Sending: a file from the page cache goes out with ``os.sendfile`` or with
``readinto`` + ``sendall`` (1 MiB), to a ``vsockctl recv`` process. Receiving,
from a ``vsockctl send`` process: vsockctl's engine writes into a file with
``splice`` (its default for files and pipes) or, told the file is no splice
target, with ``recv_into`` + ``write``. The peer is a process of its own, as it
is in use: threads of one process would share its lock.

What vsockctl picks where (``kernel_copy.sendfile_helps`` and
``Transfer.receive_stream``) rests on these figures: the README keeps the last
ones measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rounds import turns

from vsockctl.transfer.engine import DEFAULT_CHUNK, Transfer
from vsockctl.transfer.stats import TransferStats
from vsockctl.transfer.streams import StreamSink
from vsockctl.units import format_size, parse_size
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.constants import VMADDR_CID_LOCAL, VMADDR_PORT_ANY
from vsockctl.vsock.sockets import SocketType, accept, connect, listen, local_address

VSOCKCTL = [sys.executable, "-m", "vsockctl"]


def send_with(how: str, path: Path, size: int) -> float:
    """Seconds to send ``path`` to a ``vsockctl recv`` process, until it has it all."""
    peer = subprocess.Popen(
        [*VSOCKCTL, "--json", "recv", "--port", "any", "/dev/null"], stdout=subprocess.PIPE
    )
    assert peer.stdout is not None
    try:
        record: dict[str, Any] = {}
        while record.get("event") != "listening":  # sockopt records come first
            record = json.loads(peer.stdout.readline() or b'{"event": "gone"}')
            if record["event"] == "gone":
                raise SystemExit("vsockctl recv ended before it listened")
        address = VsockAddress(VMADDR_CID_LOCAL, int(record["port"]))  # the kernel's pick
        with connect(address, SocketType.STREAM, timeout=10) as sock:
            started = time.monotonic()
            with path.open("rb") as file:
                if how == "sendfile":
                    offset = 0
                    while offset < size:
                        offset += os.sendfile(sock.fileno(), file.fileno(), offset, size - offset)
                else:
                    view = memoryview(bytearray(DEFAULT_CHUNK))
                    while n := file.readinto(view):
                        sock.sendall(view[:n])
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)  # the receiver closes once it has everything
            elapsed = time.monotonic() - started
    finally:
        peer.stdout.read()
        if peer.wait(timeout=60):
            raise SystemExit(f"vsockctl recv failed ({peer.returncode})")
    return elapsed


def receive_with(how: str, path: Path, size: int) -> float:
    """Seconds to receive ``size`` bytes from a ``vsockctl send`` process into
    ``path`` with vsockctl's engine (from the connection to the sender's close)."""
    with listen(VsockAddress(VMADDR_CID_LOCAL, VMADDR_PORT_ANY)) as server:
        port = str(local_address(server).port)
        to = f"{VMADDR_CID_LOCAL}:{port}"
        peer = subprocess.Popen([*VSOCKCTL, "-q", "send", "--to", to, "--size", str(size)])
        conn, _ = accept(server)
    started = time.monotonic()
    with conn, path.open("wb") as file:
        sink = StreamSink(file, str(path))
        if how == "recv_into+write":
            sink.kernel_fd = None  # the engine's buffered path
        Transfer(TransferStats()).receive_stream(conn, sink)
        sink.flush()
    elapsed = time.monotonic() - started
    if peer.wait(timeout=60) or path.stat().st_size != size:
        raise SystemExit(f"{how}: received {path.stat().st_size} of {size} bytes")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M", help="bytes per run (default 256M)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    args = parser.parse_args()
    size = parse_size(args.size)
    print(
        f"kernel {platform.release()}, {format_size(size)} per run, {args.rounds} rounds",
        flush=True,
    )
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        source, target = Path(tmp, "source"), Path(tmp, "target")
        source.write_bytes(os.urandom(1 << 20) * (size >> 20))
        source.read_bytes()  # in the page cache
        for title, run, names in (
            ("sending a file", send_with, ["sendfile", "readinto+sendall"]),
            ("receiving into a file", receive_with, ["splice", "recv_into+write"]),
        ):
            seconds: dict[str, list[float]] = {name: [] for name in names}
            for name in turns(names, args.rounds):
                path = source if run is send_with else target
                seconds[name].append(run(name, path, size))
                print(f"  {name}: {seconds[name][-1]:.2f}s", file=sys.stderr, flush=True)
            print(f"{title}, median of {args.rounds} (Gbit/s):")
            for name, runs in seconds.items():
                rate = size * 8 / statistics.median(runs) / 1e9
                print(f"  {name:<18} {rate:6.2f}   runs: {', '.join(f'{s:.2f}s' for s in runs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
