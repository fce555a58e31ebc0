"""Constant memory: send 2 GiB with ``vsockctl send`` to ``vsockctl recv`` and print max RSS.

Runs where vsock carries data over CID 1 (inside the test VM):

    scripts/vmrun 'python benchmarks/transfer_memory.py'
    scripts/vmrun 'python benchmarks/transfer_memory.py --size 8G'

Each end runs as its own process; the figures come from ``wait4``'s resource
usage of that process, so they are the whole interpreter's peak, not a sample.
A baseline (``vsockctl --version``) shows what the interpreter and imports
alone cost, so the growth due to the transfer is the difference.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time

VSOCKCTL = [sys.executable, "-m", "vsockctl"]


def max_rss_kib(proc: subprocess.Popen[bytes]) -> tuple[int, int]:
    """Wait for ``proc``; return its exit status and peak resident set in KiB."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G", help="how much to send (default 2G)")
    parser.add_argument("--buf-size", help="bytes per call (default: vsockctl's own, 1M)")
    args = parser.parse_args()
    port = str(random.randint(20000, 60000))

    baseline = subprocess.Popen([*VSOCKCTL, "--version"], stdout=subprocess.DEVNULL)
    _, base_rss = max_rss_kib(baseline)

    buf = ["--buf-size", args.buf_size] if args.buf_size else []
    recv = subprocess.Popen(
        [*VSOCKCTL, "--json", "recv", "--port", port, *buf],
        stdout=subprocess.DEVNULL,
    )
    started = time.monotonic()
    send = subprocess.Popen(
        [
            *VSOCKCTL,
            "send",
            "--to",
            f"1:{port}",
            "--size",
            args.size,
            "--pattern",
            "counter",
            *buf,
            "--retry",
            "50",
            "--retry-delay",
            "0.1",
        ]
    )
    send_status, send_rss = max_rss_kib(send)
    recv_status, recv_rss = max_rss_kib(recv)
    elapsed = time.monotonic() - started

    print(f"transfer of {args.size} in {elapsed:.1f} s (buffers {args.buf_size or 'default'})")
    print(f"  interpreter baseline (vsockctl --version): {base_rss / 1024:7.1f} MiB max RSS")
    print(f"  vsockctl send:                             {send_rss / 1024:7.1f} MiB max RSS")
    print(f"  vsockctl recv:                             {recv_rss / 1024:7.1f} MiB max RSS")
    print(
        f"  growth over baseline: send {(send_rss - base_rss) / 1024:+.1f} MiB, "
        f"recv {(recv_rss - base_rss) / 1024:+.1f} MiB"
    )
    if send_status or recv_status:
        print(f"  FAILED: send exited {send_status}, recv exited {recv_status}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
