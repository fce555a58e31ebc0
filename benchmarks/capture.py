"""What a running capture costs a transfer, and whether it keeps up: over CID 1, in the test VM.

    scripts/vmrun 'python benchmarks/capture.py'
    scripts/vmrun --kernel 6.1 'python benchmarks/capture.py --size 256M --rounds 2'

Each round sends SIZE (512 MiB) from ``vsockctl send`` to ``vsockctl recv``
three ways: with no capture; with ``vsockctl capture --summary`` (headers only,
the default snap length); and with ``capture -w FILE --summary`` keeping whole
frames (FILE: /dev/null unless --write-to, so that the VM's memory is not the
limit). It prints, for each: the transfer's goodput and its ratio to the
plain run of the same round; what the capture read against the kernel's own
count of drops (``PACKET_STATISTICS``); the payload it saw against SIZE; and
the capture's CPU time per packet (its user + system time over the packets read).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

from rounds import turns

from vsockctl.units import format_size, parse_size

VSOCKCTL = [sys.executable, "-m", "vsockctl"]
MODES = ("plain", "link", "tcpdump", "headers", "whole")


def records(text: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def transfer(port: int, size: int) -> float:
    """Goodput in bytes/s of one send of ``size`` bytes to a recv on ``port``."""
    receiver = subprocess.Popen(
        [*VSOCKCTL, "--json", "recv", "--port", str(port), "/dev/null"], stdout=subprocess.PIPE
    )
    assert receiver.stdout is not None
    while json.loads(receiver.stdout.readline())["event"] != "listening":
        pass
    sent = subprocess.run(
        [*VSOCKCTL, "--json", "send", "--cid", "1", "--port", str(port), "--size", str(size)],
        capture_output=True, check=True,
    )  # fmt: skip
    receiver.communicate(timeout=120)
    (stats,) = [r for r in records(sent.stdout) if r["event"] == "stats"]
    return float(stats["sent_bytes"]) * 1e9 / float(stats["elapsed_ns"])


def beside(mode: str, port: int, size: int) -> dict[str, Any]:
    """The cost of the link alone (no reader), and of tcpdump reading it: what capture adds."""
    subprocess.run(["modprobe", "vsockmon"], check=True)
    subprocess.run(["ip", "link", "add", "benchmon", "type", "vsockmon"], check=True)
    subprocess.run(["ip", "link", "set", "benchmon", "up"], check=True)
    try:
        if mode == "link":
            return {"goodput": transfer(port, size)}
        tcpdump = subprocess.Popen(
            ["tcpdump", "-i", "benchmon", "-w", "/dev/null"], stderr=subprocess.PIPE, text=True
        )
        assert tcpdump.stderr is not None
        tcpdump.stderr.readline()  # listening on
        goodput = transfer(port, size)
        time.sleep(1)
        tcpdump.send_signal(signal.SIGINT)
        said = tcpdump.communicate()[1]
        return {"goodput": goodput, "said": " ".join(said.split())}
    finally:
        subprocess.run(["ip", "link", "del", "benchmon"], check=True)


def captured(mode: str, port: int, size: int, write_to: str, idle_cpu: float) -> dict[str, Any]:
    args = [*VSOCKCTL, "--json", "capture", "--port", str(port), "--summary"]
    if mode == "whole":
        args += ["-w", write_to]
    capture = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert capture.stdout is not None
    first = json.loads(capture.stdout.readline() or b"{}")
    if first.get("event") != "capturing":
        raise SystemExit(f"capture did not start: {capture.communicate()[1].decode()}")
    goodput = transfer(port, size)
    time.sleep(1)  # the last resets
    capture.send_signal(signal.SIGINT)
    out = capture.stdout.read()
    capture.stdout.close()
    assert capture.stderr is not None
    capture.stderr.close()
    _, _, usage = os.wait4(capture.pid, 0)
    capture.returncode = 0  # reaped by wait4
    found = records(out)
    (done,) = [r for r in found if r["event"] == "capture_done"]
    payload = sum(c["from_client"]["payload_bytes"] for c in found if c["event"] == "connection")
    cpu = usage.ru_utime + usage.ru_stime - idle_cpu
    return {
        "goodput": goodput,
        "packets": done["packets"],
        "dropped": done["dropped"],
        "payload": payload,
        "cpu_per_packet_us": cpu / max(done["packets"], 1) * 1e6,
        "max_rss_mib": usage.ru_maxrss / 1024,
    }


def startup_cpu(port: int) -> float:
    """CPU seconds of a capture that starts and stops with no packet: Python and imports."""
    capture = subprocess.Popen(
        [*VSOCKCTL, "--json", "capture", "--port", str(port), "--summary"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert capture.stdout is not None
    capture.stdout.readline()
    capture.send_signal(signal.SIGINT)
    capture.stdout.read()
    capture.stdout.close()
    _, _, usage = os.wait4(capture.pid, 0)
    capture.returncode = 0
    return float(usage.ru_utime + usage.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512M")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-to", default="/dev/null", help="-w's FILE for 'whole'")
    options = parser.parse_args()
    size = parse_size(options.size)
    print(f"kernel {platform.release()}, {format_size(size)} per transfer, {options.rounds} rounds")
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    plain_by_round: list[float] = []
    port = 7300
    idle_cpu = startup_cpu(port)
    print(f"a capture that sees nothing uses {idle_cpu:.2f} s of CPU (start, stop): not counted")
    for number, mode in enumerate(turns(MODES, options.rounds)):
        port += 1
        if mode == "plain":
            result = {"goodput": transfer(port, size)}
            plain_by_round.append(result["goodput"])
        elif mode in ("link", "tcpdump"):
            result = beside(mode, port, size)
        else:
            result = captured(mode, port, size, options.write_to, idle_cpu)
        result["round"] = number // len(MODES)
        results[mode].append(result)
        extra = f" ({result['said']})" if "said" in result else ""
        if "packets" in result:
            extra = (
                f", {result['packets']} packets, {result['dropped']} dropped, "
                f"payload seen {result['payload'] == size}, "
                f"{result['cpu_per_packet_us']:.1f} µs CPU per packet, "
                f"max RSS {result['max_rss_mib']:.0f} MiB"
            )
        print(f"  {mode:8} {result['goodput'] * 8 / 1e9:.3f} Gbit/s{extra}", flush=True)
    plain = statistics.median(r["goodput"] for r in results["plain"])
    print(f"\nmedians (plain: {plain * 8 / 1e9:.3f} Gbit/s)")
    for mode in MODES[1:]:
        runs = results[mode]
        ratios = [r["goodput"] / plain_by_round[r["round"]] for r in runs]
        if "packets" not in runs[0]:
            print(f"  {mode:8} {statistics.median(ratios):.2f}x plain of its round")
            continue
        print(
            f"  {mode:8} {statistics.median(r['goodput'] for r in runs) * 8 / 1e9:.3f} Gbit/s, "
            f"{statistics.median(ratios):.2f}x plain of its round (min {min(ratios):.2f}x), "
            f"drops {sum(r['dropped'] for r in runs)}, "
            f"payload seen whole in {sum(r['payload'] == size for r in runs)}/{len(runs)}, "
            f"{statistics.median(r['cpu_per_packet_us'] for r in runs):.1f} µs CPU per packet"
        )
    link = [r["goodput"] / plain_by_round[r["round"]] for r in results["link"]]
    print(
        f"\nthe link alone (no reader) leaves {statistics.median(link):.2f}x of plain: the kernel "
        "copies each packet for the monitor whoever reads it"
    )


if __name__ == "__main__":
    main()
