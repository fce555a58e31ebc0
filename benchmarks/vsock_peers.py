"""vsockctl against the vsock peers people know, in one boot, same data, same buffer sizes.

Run inside the test VM (vsock_loopback, CID 1):

    scripts/vmrun 'python benchmarks/vsock_peers.py'
    scripts/vmrun 'python benchmarks/vsock_peers.py --size 1G --runs 5'

For each buffer size (128 KiB with the kernel's default vsock buffer, and
1 MiB with a 1 MiB vsock buffer on both ends) it measures receiver goodput of:
``vsockctl throughput``, ``vsockctl send`` to ``vsockctl recv``, socat (same
block size, reading a file), a bare Python ``sendall``/``recv_into`` loop (the
floor of what Python can do), and ``vsock_perf`` / ``iperf3 --vsock`` when on
PATH. Then latency: ``vsockctl bench --latency`` against a bare Python
ping-pong. It prints min/median/max of the runs and the ratios to socat and to
the bare loop, and the peak RSS of a long ``bench`` run. The runs of a table are
taken in rounds, each tool once a round, so a slow spell of the machine falls on
every tool alike.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from rounds import turns

CID = 1
VSOCKCTL = [sys.executable, "-m", "vsockctl"]
SO_VM_SOCKETS_BUFFER_SIZE, SO_VM_SOCKETS_BUFFER_MAX_SIZE = 0, 2


def free_port() -> int:
    return random.randint(20000, 60000)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


# -- the bare Python loop, run as two processes of this script ------------------------------


def set_vsock_buffer(sock: socket.socket, size: int | None) -> None:
    if size:
        sock.setsockopt(socket.AF_VSOCK, SO_VM_SOCKETS_BUFFER_MAX_SIZE, size)
        sock.setsockopt(socket.AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, size)


def bare_receive(port: int, buf_size: int, vsock_buf: int | None, out: str | None) -> None:
    """recv_into one buffer; with ``out``, each chunk written to that file."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if out else None
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as server:
        set_vsock_buffer(server, vsock_buf)
        server.bind((socket.VMADDR_CID_ANY, port))
        server.listen(1)
        print("ready", flush=True)
        conn, _ = server.accept()
        with conn:
            buf = memoryview(bytearray(buf_size))
            total = n = conn.recv_into(buf)
            started = time.monotonic()
            while n:
                if fd is not None:
                    os.write(fd, buf[:n])
                n = conn.recv_into(buf)
                total += n
            elapsed = time.monotonic() - started
    if fd is not None:
        os.close(fd)
    print(json.dumps({"bytes": total, "seconds": elapsed}), flush=True)


def bare_send(port: int, buf_size: int, vsock_buf: int | None, size: int, src: str | None) -> None:
    """sendall of one buffer; with ``src``, the buffer is read from that file each time."""
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as sock:
        set_vsock_buffer(sock, vsock_buf)
        sock.connect((CID, port))
        buf = memoryview(bytearray(buf_size))
        if src is not None:
            with open(src, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    sock.sendall(buf[:n])
        else:
            left = size
            while left:
                chunk = buf if left >= buf_size else buf[:left]
                sock.sendall(chunk)
                left -= len(chunk)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)


def bare_echo(port: int, msg_size: int) -> None:
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as server:
        server.bind((socket.VMADDR_CID_ANY, port))
        server.listen(1)
        print("ready", flush=True)
        conn, _ = server.accept()
        with conn:
            buf = memoryview(bytearray(msg_size))
            while True:
                got = 0
                while got < msg_size:
                    n = conn.recv_into(buf[got:])
                    if not n:
                        return
                    got += n
                conn.sendall(buf)


def bare_ping(port: int, msg_size: int, seconds: float) -> float:
    """Round trips per second of a bare Python ping-pong."""
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as sock:
        sock.connect((CID, port))
        out, back = memoryview(bytearray(msg_size)), memoryview(bytearray(msg_size))
        count, started = 0, time.monotonic()
        end = started + seconds
        while time.monotonic() < end:
            sock.sendall(out)
            got = 0
            while got < msg_size:
                got += sock.recv_into(back[got:])
            count += 1
        return count / (time.monotonic() - started)


# -- one measurement per tool: receiver goodput in bytes per second ----------------------------


def start_ready(args: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line and "listening" not in line:
        raise RuntimeError(f"{args[0]} did not start: {line!r}")
    return proc


def wait_listening(port: int, deadline: float = 10.0) -> None:
    """Wait until ss-like diag shows the port listening (for peers that print nothing)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        out = subprocess.run(
            [*VSOCKCTL, "--json", "ls", "--listening", "--port", str(port)],
            capture_output=True,
            text=True,
        ).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def run_bare(
    size: int, buf: int, vsock_buf: int | None, src: Path | None = None, out: Path | None = None
) -> float:
    port = free_port()
    me = [sys.executable, __file__]
    extra = ["--vsock-buf", str(vsock_buf)] if vsock_buf else []
    sink = ["--file", str(out)] if out else []
    source = ["--file", str(src)] if src else []
    receiver = start_ready([*me, "bare-recv", str(port), str(buf), *extra, *sink])
    subprocess.run([*me, "bare-send", str(port), str(buf), str(size), *extra, *source], check=True)
    printed, _ = receiver.communicate(timeout=600)
    result = json.loads(printed.strip().splitlines()[-1])
    return float(result["bytes"] / result["seconds"])


def run_throughput(size: int, buf: int, vsock_buf: int | None) -> float:
    vbuf = str(vsock_buf) if vsock_buf else "default"
    return run_bench_defaults(size, "--buf-size", str(buf), "--vsock-buffer-size", vbuf)


def run_send_recv(size: int, buf: int, vsock_buf: int | None) -> float:
    port = free_port()
    opts = ["--buf-size", str(buf)]
    if vsock_buf:
        opts += [
            "--sockopt",
            f"buffer-max-size={vsock_buf}",
            "--sockopt",
            f"buffer-size={vsock_buf}",
        ]
    receiver = subprocess.Popen(
        [*VSOCKCTL, "--json", "recv", "--port", str(port), "/dev/null", *opts],
        stdout=subprocess.PIPE,
        text=True,
    )
    subprocess.run(
        [
            *VSOCKCTL,
            "-q",
            "send",
            "--to",
            f"{CID}:{port}",
            "--size",
            str(size),
            *opts,
            "--retry",
            "100",
            "--retry-delay",
            "50ms",
        ],
        check=True,
    )
    out, _ = receiver.communicate(timeout=600)
    stats = [json.loads(x) for x in out.splitlines() if '"stats"' in x][-1]
    return float(stats["received_bytes"] / (stats["elapsed_ns"] / 1e9))


def run_send_recv_defaults(size: int, src: Path | None = None, out: Path | None = None) -> float:
    """``send`` to ``recv`` with no flags at all: generated data (or ``src``) to stdout
    redirected to /dev/null (or to the file ``out``)."""
    port = free_port()
    with open(out or os.devnull, "wb") as sink:
        receiver = subprocess.Popen(
            [*VSOCKCTL, "--json", "recv", "--port", str(port)],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
        )
        what = [str(src)] if src else ["--size", str(size)]
        retry = ["--retry", "100", "--retry-delay", "50ms"]
        subprocess.run(
            [*VSOCKCTL, "-q", "send", "--to", f"{CID}:{port}", *what, *retry], check=True
        )
        _, err = receiver.communicate(timeout=600)
    stats = [json.loads(x) for x in err.splitlines() if '"stats"' in x][-1]
    return float(stats["received_bytes"] / (stats["elapsed_ns"] / 1e9))


def bench_summary(*args: str) -> dict[str, Any]:
    """The summary record of ``vsockctl --json bench --loopback --interval 0 ARGS``."""
    out = subprocess.run(
        [*VSOCKCTL, "--json", "bench", "--loopback", "--interval", "0", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return summary


def run_bench_defaults(size: int, *extra: str) -> float:
    """``bench --loopback`` of ``size`` bytes; the receiver's goodput in bytes/s."""
    summary = bench_summary("--bytes", str(size), *extra)
    return float(summary["directions"][0]["receiver"]["bytes_per_second"])


def run_socat(size: int, buf: int, vsock_buf: int | None, *, source: Path) -> float:
    port = free_port()
    receiver = subprocess.Popen(
        ["socat", "-u", "-b", str(buf), f"VSOCK-LISTEN:{port}", "OPEN:/dev/null,wronly"]
    )
    wait_listening(port)
    started = time.monotonic()
    subprocess.run(
        ["socat", "-u", "-b", str(buf), f"OPEN:{source}", f"VSOCK-CONNECT:{CID}:{port}"],
        check=True,
    )
    receiver.wait(timeout=600)
    return size / (time.monotonic() - started)


def run_iperf3(size: int, buf: int, vsock_buf: int | None) -> float:
    server = subprocess.Popen(["iperf3", "--vsock", "-s", "-1"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    out = subprocess.run(
        ["iperf3", "--vsock", "-c", str(CID), "-n", str(size), "-l", str(buf), "-J"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    server.wait(timeout=60)
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"] / 8)


def run_vsock_perf(size: int, buf: int, vsock_buf: int | None) -> float:
    port = free_port()
    vbuf = str(vsock_buf or 262144)
    server = subprocess.Popen(
        ["vsock_perf", "--port", str(port), "--buf-size", str(buf), "--vsk-size", vbuf],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    subprocess.run(
        [
            "vsock_perf",
            "--sender",
            str(CID),
            "--port",
            str(port),
            "--bytes",
            str(size),
            "--buf-size",
            str(buf),
            "--vsk-size",
            vbuf,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    out, _ = server.communicate(timeout=600)
    for line in out.splitlines():
        if "throughput" in line.lower() and "bits" in line.lower():
            value = float(line.split(":")[1].split()[0])
            return value * 1e9 / 8
    raise RuntimeError("vsock_perf printed no throughput")


# -- reporting -----------------------------------------------------------------------------------


def measure_all(
    runs: int, tools: Mapping[str, Callable[[], float]]
) -> dict[str, list[float] | None]:
    """``runs`` figures per tool, taken in :func:`rounds.turns`; a tool that fails
    once is dropped (None)."""
    results: dict[str, list[float] | None] = {name: [] for name in tools}
    for name in turns(list(tools), runs):
        figures = results[name]
        if figures is None:
            continue
        try:
            figures.append(tools[name]())
        except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
            print(f"  {name}: failed: {exc}")
            results[name] = None
    return results


def row(name: str, figures: list[float], floors: dict[str, float]) -> str:
    def gbit(x: float) -> str:
        return f"{x * 8 / 1e9:6.2f}"

    median = statistics.median(figures)
    ratios = "  ".join(f"{median / v:5.2f}x {k}" for k, v in floors.items() if v)
    return (
        f"  {name:<26} {gbit(min(figures))} / {gbit(median)} / {gbit(max(figures))} Gbit/s"
        f"  {ratios}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512M", help="bytes per run (default 512M)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool (default 3)")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument(
        "--only",
        choices=["throughput", "defaults", "files", "zerocopy", "latency", "memory"],
        action="append",
        help="run only these parts (repeatable; default: all)",
    )
    args = parser.parse_args()
    parts = set(args.only or ["throughput", "defaults", "files", "zerocopy", "latency", "memory"])
    size = parse_size(args.size)
    source = Path("/tmp/vsock_peers.data")
    with source.open("wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(size // len(block)):
            f.write(block)
    print(f"vsock peers, {args.runs} runs of {size >> 20} MiB each, CID {CID}")
    print("  figures: min / median / max receiver goodput; ratios of the median")
    for buf, vsock_buf in ((128 << 10, None), (1 << 20, 1 << 20)) if "throughput" in parts else ():
        label = f"buffers {buf >> 10} KiB, vsock buffer {(vsock_buf or 262144) >> 10} KiB"
        print(f"\n{label}")
        tools: dict[str, Callable[[int, int, int | None], float]] = {
            "bare python loop": run_bare,
            "socat -b": partial(run_socat, source=source),
            "vsockctl throughput": run_throughput,
            "vsockctl send | recv": run_send_recv,
        }
        for tool, func in (("iperf3", run_iperf3), ("vsock_perf", run_vsock_perf)):
            if shutil.which(tool):
                tools[tool] = func
            else:
                print(f"  {tool}: not on PATH, skipped")
        results = measure_all(
            args.runs, {name: partial(func, size, buf, vsock_buf) for name, func in tools.items()}
        )
        floors = {
            "bare": statistics.median(results["bare python loop"] or [0]),
            "socat": statistics.median(results["socat -b"] or [0]),
        }
        for name, figures in results.items():
            if figures:
                print(row(name, figures, floors))

    if "defaults" in parts:
        defaults(args.runs, size, source)
    if "files" in parts:
        files(args.runs, size, source)
    if "zerocopy" in parts:
        zerocopy(args.runs, size)
    if "latency" in parts:
        latency(args.runs, args.latency_seconds)
    if "memory" in parts:
        memory()
    source.unlink()
    return 0


def zerocopy(runs: int, size: int) -> None:
    """bench with and without --zerocopy (MSG_ZEROCOPY needs Linux 6.7+)."""
    print(f"\nbench --loopback, {size >> 20} MiB, kernel {os.uname().release}")
    results = measure_all(
        runs,
        {
            "bench": partial(run_bench_defaults, size),
            "bench --zerocopy": partial(run_bench_defaults, size, "--zerocopy"),
        },
    )
    floor = {"bench": statistics.median(results["bench"] or [0])}
    for name, figures in results.items():
        if figures:
            print(row(name, figures, floor))


def defaults(runs: int, size: int, source: Path) -> None:
    """vsockctl with no flags at all, against the bare loop at its best (1 MiB / 1 MiB)."""
    best = partial(run_bare, size, 1 << 20, 1 << 20)
    print("\nno flags: vsockctl's defaults against the bare loop at 1 MiB calls, 1 MiB buffer")
    generated = {
        "bare python loop": best,
        "socat -b 1M": partial(run_socat, size, 1 << 20, None, source=source),
        "send --size | recv >null": partial(run_send_recv_defaults, size),
        "bench": partial(run_bench_defaults, size),
    }
    _table(runs, generated, "bare python loop", "socat -b 1M")


def files(runs: int, size: int, source: Path) -> None:
    """A file in the page cache into a file, no flags, against a bare read + sendall loop.

    /tmp (under 1 GiB in the VM) holds the generated source, this file and its
    copy, so a smaller size.
    """
    file_size = min(size, 160 << 20)
    src, out = source.with_name("file_src.data"), source.with_name("file_out.data")
    subprocess.run(["head", "-c", str(file_size), str(source)], stdout=src.open("wb"), check=True)
    # Into the page cache, by another process: reading it here would raise this
    # process's peak RSS, which every child inherits at fork and reports as its own.
    subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)
    print(f"\na {file_size >> 20} MiB file in the page cache into a file")
    files = {
        "bare loop: read + sendall": partial(
            run_bare, file_size, 1 << 20, 1 << 20, src=src, out=out
        ),
        "socat -b 1M": partial(run_socat, file_size, 1 << 20, None, source=src),
        "send FILE | recv FILE": partial(run_send_recv_defaults, file_size, src=src, out=out),
    }
    _table(runs, files, "bare loop: read + sendall", "socat -b 1M")
    src.unlink()
    out.unlink(missing_ok=True)


def _table(runs: int, tools: Mapping[str, Callable[[], float]], bare: str, socat: str) -> None:
    results = measure_all(runs, tools)
    floors = {
        "bare": statistics.median(results[bare] or [0]),
        "socat": statistics.median(results[socat] or [0]),
    }
    for name, figures in results.items():
        if figures:
            print(row(name, figures, floors))


def latency(runs: int, seconds: float) -> None:
    print(f"\nlatency, 1-byte ping-pong, {seconds:g} s per run")
    bare_rates, our_rates = [], []
    for _ in range(runs):
        port = free_port()
        echo = start_ready([sys.executable, __file__, "bare-echo", str(port), "1"])
        bare_rates.append(bare_ping(port, 1, seconds))
        echo.wait(timeout=30)
        summary = bench_summary("--latency", "--msg-size", "1", "--time", f"{seconds}s")
        our_rates.append(summary["latency"]["round_trips_per_second"])
    bare_median = statistics.median(bare_rates)
    for name, rates in (
        ("bare python ping-pong", bare_rates),
        ("vsockctl bench --latency", our_rates),
    ):
        print(
            f"  {name:<26} {min(rates):8.0f} / {statistics.median(rates):8.0f} / "
            f"{max(rates):8.0f} round trips/s  {statistics.median(rates) / bare_median:5.2f}x bare"
        )


def memory() -> None:
    """Peak RSS of the client over a short and a long run: flat means the same."""
    print("\nmemory: vsockctl bench --loopback, client peak RSS")
    for seconds in (2, 30):
        run = subprocess.Popen([*VSOCKCTL, "-q", "bench", "--loopback", "--time", f"{seconds}s"])
        _, status, usage = os.wait4(run.pid, 0)
        run.returncode = os.waitstatus_to_exitcode(status)
        print(f"  {seconds:>3} s run: {usage.ru_maxrss / 1024:.1f} MiB (exit {run.returncode})")


def dispatch() -> int:
    if len(sys.argv) > 1 and sys.argv[1].startswith("bare-"):
        parser = argparse.ArgumentParser()
        parser.add_argument("mode")
        parser.add_argument("port", type=int)
        parser.add_argument("size", type=int)
        parser.add_argument("total", type=int, nargs="?")
        parser.add_argument("--vsock-buf", type=int)
        parser.add_argument("--file")
        a = parser.parse_args()
        if a.mode == "bare-recv":
            bare_receive(a.port, a.size, a.vsock_buf, a.file)
        elif a.mode == "bare-send":
            bare_send(a.port, a.size, a.vsock_buf, a.total, a.file)
        else:
            bare_echo(a.port, a.size)
        return 0
    return main()


if __name__ == "__main__":
    sys.exit(dispatch())
