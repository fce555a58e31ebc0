"""Goodput through a real hybrid vsock mux: vsockctl against socat and a bare Python loop.

    .venv/bin/python benchmarks/hybrid.py                 128 MiB per run, 3 rounds
    .venv/bin/python benchmarks/hybrid.py --size 64M --rounds 5

Runs on this machine: it boots the hybrid stage's VM (vhost-device-vsock here,
the test VM behind it; see tests/hybrid) and measures both ways, each figure the
receiver's goodput (bytes over the time from its accept to the end of the
stream), the receiver always ``vsockctl recv`` into /dev/null:

- host to guest: the sender here speaks ``CONNECT <port>`` on the mux. vsockctl
  (``send --uds``, sendfile from a file); socat from the same file onto a Unix
  socket whose handshake a small wrapper did (``FD:N``); a bare Python loop
  (handshake, ``readinto`` and ``sendall`` of 1 MiB).
- guest to host: the sender in the VM connects to CID 2, the receiver here
  listens on ``mux.sock_PORT``. Every sender writes 32 KiB at a time: this
  device drops larger packets from the 6.12 guest (see vsockctl/transfer/stall.py).

Runs are taken in rounds (benchmarks/rounds.py); the medians are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rounds import turns

from tests.hybrid.vm import HybridVm
from vsockctl.units import parse_size

VSOCKCTL = [sys.executable, "-m", "vsockctl"]
# Programs for ``python -c``: CONNECT through the mux, then a sender (socat, or a loop).
CONNECT = """
import os, socket, sys
mux, port, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
sock = socket.socket(socket.AF_UNIX)
sock.connect(mux)
sock.sendall(b"CONNECT %d\\n" % port)
reply = b""
while not reply.endswith(b"\\n"):
    reply += sock.recv(1)
assert reply.startswith(b"OK "), reply
"""
HANDSHAKE = (
    CONNECT
    + """
os.set_inheritable(sock.fileno(), True)
os.execvp(rest[0], [a.replace("FD:SOCK", f"FD:{sock.fileno()}") for a in rest])
"""
)
BARE_HOST = (
    CONNECT
    + """
view = memoryview(bytearray(1 << 20))
with open(rest[0], "rb", buffering=0) as f:
    while n := f.readinto(view):
        sock.sendall(view[:n])
sock.close()
"""
)
BARE_GUEST = """
import socket, sys
port, path = int(sys.argv[1]), sys.argv[2]
sock = socket.socket(socket.AF_VSOCK)
sock.connect((2, port))
view = memoryview(bytearray(32 * 1024))
with open(path, "rb", buffering=0) as f:
    while n := f.readinto(view):
        sock.sendall(view[:n])
sock.close()
"""
GUEST_FILE = "/tmp/hybrid-bench.bin"


def rate_of(stats_text: str) -> float:
    """The receiver's goodput in MB/s, from its --json stats record."""
    for line in stats_text.splitlines():
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("event") == "stats":
            return float(record["received_bytes"]) / float(record["elapsed_ns"]) * 1e3
    raise RuntimeError(f"no stats from the receiver: {stats_text[-500:]}")


class Bench:
    def __init__(self, vm: HybridVm, source: Path, size: int) -> None:
        self.vm, self.source, self.size = vm, source, size
        self.port = 7000

    def next_port(self) -> int:
        self.port += 1
        return self.port

    def to_guest(self, sender: Callable[[int], list[str]]) -> float:
        port = self.next_port()
        pid = self.vm.spawn("vsockctl", "--json", "recv", "--port", str(port), "/dev/null")
        self.vm.wait_for_output(pid, '"listening"', 60)
        subprocess.run(sender(port), check=True, capture_output=True, timeout=600)
        done = self.vm.wait(pid, 120)
        return rate_of(done.stdout.decode())

    def to_host(self, sender: Callable[[int], list[str]]) -> float:
        port = self.next_port()
        receiver = subprocess.Popen(
            [*VSOCKCTL, "--json", "recv", "--uds", str(self.vm.mux), "--port", str(port),
             "/dev/null"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert receiver.stdout is not None
        receiver.stdout.readline()  # listening
        done = self.vm.run(*sender(port), timeout=600)
        if done.rc != 0:
            raise RuntimeError(f"guest sender failed: {done.text[-500:]}")
        out, _ = receiver.communicate(timeout=120)
        return rate_of(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="128M", help="bytes per run (default 128M)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="vsk-bench", dir="/tmp") as tmp:
        source = Path(tmp) / "source.bin"
        with source.open("wb") as f:
            for _ in range(0, size, 1 << 20):
                f.write(bytes(range(256)) * 4096)
        vm = HybridVm(Path(tmp) / "vm")
        try:
            ready = vm.boot()
            print(f"VM up in {vm.boot_seconds:.0f} s, kernel {ready['kernel']}, CID {ready['cid']}")
            made = vm.run("sh", "-c", f"head -c {size} /dev/urandom > {GUEST_FILE}")
            assert made.rc == 0, made.text
            results = measure(Bench(vm, source, size), str(vm.mux), source, args.rounds)
        finally:
            vm.shutdown()
    print(f"\nreceiver goodput, MB/s, medians of {args.rounds} rounds of {args.size}:")
    for direction, tools in results.items():
        best_other = max(statistics.median(v) for k, v in tools.items() if k != "vsockctl")
        ours = statistics.median(tools["vsockctl"])
        print(f"  {direction}:")
        for name, rates in tools.items():
            shown = ", ".join(f"{r:.1f}" for r in rates)
            print(f"    {name:10} {statistics.median(rates):7.1f}   ({shown})")
        print(f"    vsockctl / best other: {ours / best_other:.2f}x")
    return 0


def measure(bench: Bench, mux: str, source: Path, rounds: int) -> dict[str, dict[str, list[float]]]:
    src = str(source)
    to_guest: dict[str, Callable[[int], list[str]]] = {
        "vsockctl": lambda p: [*VSOCKCTL, "send", "--uds", mux, "--port", str(p), src],
        "socat": lambda p: [
            sys.executable,
            "-c",
            HANDSHAKE,
            mux,
            str(p),
            "socat",
            "-b",
            "131072",
            "-u",
            f"OPEN:{src}",
            "FD:SOCK",
        ],
        "python": lambda p: [sys.executable, "-c", BARE_HOST, mux, str(p), src],
    }
    to_host: dict[str, Callable[[int], list[str]]] = {
        "vsockctl": lambda p: [
            "vsockctl",
            "send",
            "--cid",
            "2",
            "--port",
            str(p),
            "--buf-size",
            "32K",
            GUEST_FILE,
        ],
        "socat": lambda p: [
            "socat",
            "-b",
            "32768",
            "-u",
            f"OPEN:{GUEST_FILE}",
            f"VSOCK-CONNECT:2:{p}",
        ],
        "python": lambda p: ["python", "-c", BARE_GUEST, str(p), GUEST_FILE],
    }
    results: dict[str, dict[str, list[float]]] = {
        "host to guest": {name: [] for name in to_guest},
        "guest to host": {name: [] for name in to_host},
    }
    for name in turns(list(to_guest), rounds):
        started = time.monotonic()
        results["host to guest"][name].append(bench.to_guest(to_guest[name]))
        results["guest to host"][name].append(bench.to_host(to_host[name]))
        print(f"  {name}: {results['host to guest'][name][-1]:.1f} MB/s to the guest, "
              f"{results['guest to host'][name][-1]:.1f} back ({time.monotonic() - started:.0f} s)",
              flush=True)  # fmt: skip
    return results


if __name__ == "__main__":
    raise SystemExit(main())
