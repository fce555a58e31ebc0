"""listen, connect, send, recv over real vsock (CID 1), against each other, socat and ncat."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.peers import (
    LOCAL,
    connect_when_listening,
    free_port,
    process,
    run_vsockctl,
    sha256_file,
    vsockctl,
    write_pattern_file,
)
from tests.records import json_records
from vsockctl.exit_status import ExitStatus
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.sockets import accept, listen

pytestmark = [pytest.mark.vsock, pytest.mark.timeout(180)]

BIG = 64 * 1024 * 1024
RETRY = ("--retry", "200", "--retry-delay", "50ms")  # the receiver is still starting


@pytest.fixture(scope="module")
def big_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path, str]:
    root = tmp_path_factory.mktemp("data")
    a, b = root / "a.bin", root / "b.bin"
    return a, write_pattern_file(a, BIG, seed=11), b, write_pattern_file(b, BIG, seed=12)


def test_send_to_recv_64_mib_with_checksums(
    tmp_path: Path, big_files: tuple[Path, str, Path, str]
) -> None:
    src, digest, _, _ = big_files
    out = tmp_path / "out.bin"
    port = str(free_port())
    with process(
        [
            *_cmd(
                "recv",
                "--port",
                port,
                str(out),
                "--expect-sha256",
                digest,
                "--expect-bytes",
                str(BIG),
            ),
        ],
        stderr=subprocess.PIPE,
    ) as receiver:
        sent = run_vsockctl("send", "--cid", "1", "--port", port, str(src), "--sha256", *RETRY)
        _, recv_err = receiver.communicate(timeout=120)
    assert sent.returncode == 0, sent.stderr
    assert receiver.returncode == 0, recv_err
    assert f"sha256 sent: {digest}".encode() in sent.stderr
    assert f"received 64.0 MiB ({BIG} bytes)".encode() in recv_err
    assert sha256_file(out) == digest


def test_recv_to_stdout_is_byte_exact(
    tmp_path: Path, big_files: tuple[Path, str, Path, str]
) -> None:
    src, digest, _, _ = big_files
    out = tmp_path / "out.bin"
    port = str(free_port())
    with (
        out.open("wb") as sink,
        src.open("rb") as data,
        process(_cmd("recv", "--port", port), stdout=sink) as receiver,
    ):
        sent = run_vsockctl("send", "--to", f"1:{port}", *RETRY, stdin=data)
        assert receiver.wait(timeout=120) == 0
    assert sent.returncode == 0, sent.stderr
    assert sha256_file(out) == digest


def test_connect_and_listen_carry_both_directions_at_once(
    tmp_path: Path, big_files: tuple[Path, str, Path, str]
) -> None:
    a, digest_a, b, digest_b = big_files
    out_listen, out_connect = tmp_path / "at-listener", tmp_path / "at-connector"
    port = str(free_port())
    with (
        a.open("rb") as a_in,
        out_listen.open("wb") as l_out,
        process(_cmd("listen", "--port", port), stdin=a_in, stdout=l_out) as listener,
    ):
        with b.open("rb") as b_in, out_connect.open("wb") as c_out:
            connector = subprocess.run(
                _cmd("connect", f"1:{port}", *RETRY), stdin=b_in, stdout=c_out, timeout=150
            )
        assert listener.wait(timeout=60) == 0
    assert connector.returncode == 0
    assert sha256_file(out_listen) == digest_b
    assert sha256_file(out_connect) == digest_a


def test_socat_sends_vsockctl_receives(
    tmp_path: Path, big_files: tuple[Path, str, Path, str]
) -> None:
    src, digest, _, _ = big_files
    port = str(free_port())
    with process(
        _cmd("recv", "--port", port, "--expect-sha256", digest, "/dev/null"), stderr=subprocess.PIPE
    ) as receiver:
        _wait_until_bound(int(port))
        socat = subprocess.run(
            ["socat", "-u", "-b", "131072", f"OPEN:{src}", f"VSOCK-CONNECT:{LOCAL}:{port}"],
            capture_output=True,
            timeout=120,
        )
        _, err = receiver.communicate(timeout=60)
    assert socat.returncode == 0, socat.stderr
    assert receiver.returncode == 0, err


def test_vsockctl_sends_socat_receives(
    tmp_path: Path, big_files: tuple[Path, str, Path, str]
) -> None:
    src, digest, _, _ = big_files
    out = tmp_path / "socat.out"
    port = str(free_port())
    with (
        out.open("wb") as sink,
        process(["socat", "-u", f"VSOCK-LISTEN:{port}", "-"], stdout=sink) as socat,
    ):
        sent = run_vsockctl("send", "--to", f"1:{port}", str(src), *RETRY)
        assert socat.wait(timeout=60) == 0
    assert sent.returncode == 0, sent.stderr
    assert sha256_file(out) == digest


def test_ncat_both_ways(tmp_path: Path, big_files: tuple[Path, str, Path, str]) -> None:
    src, digest, _, _ = big_files
    # ncat listens, vsockctl sends.
    out = tmp_path / "ncat.out"
    port = str(free_port())
    with (
        out.open("wb") as sink,
        process(["ncat", "--vsock", "--recv-only", "-l", "-p", port], stdout=sink) as ncat,
    ):
        sent = run_vsockctl("send", "--to", f"1:{port}", str(src), *RETRY)
        assert ncat.wait(timeout=60) == 0
    assert sent.returncode == 0, sent.stderr
    assert sha256_file(out) == digest
    # vsockctl receives, ncat sends.
    port = str(free_port())
    with process(
        _cmd("recv", "--port", port, "--expect-sha256", digest, "/dev/null"), stderr=subprocess.PIPE
    ) as receiver:
        _wait_until_bound(int(port))
        with src.open("rb") as data:
            ncat_send = subprocess.run(
                ["ncat", "--vsock", "--send-only", "1", port],
                stdin=data,
                timeout=120,
                capture_output=True,
            )
        _, err = receiver.communicate(timeout=60)
    assert ncat_send.returncode == 0, ncat_send.stderr
    assert receiver.returncode == 0, err


@pytest.mark.kernel_features
def test_seqpacket_message_boundaries_through_the_commands() -> None:
    port = str(free_port())
    with process(
        _cmd("recv", "--json", "--port", port, "--type", "seqpacket", "/dev/null"),
        stdout=subprocess.PIPE,
    ) as receiver:
        sent = run_vsockctl(
            "send",
            "--to",
            f"1:{port}",
            "--type",
            "seqpacket",
            "--message-size",
            "1000",
            "--count",
            "50",
            "--pattern",
            "counter",
            *RETRY,
        )
        out, _ = receiver.communicate(timeout=60)
    assert sent.returncode == 0, sent.stderr
    stats = next(json.loads(line) for line in out.splitlines() if b'"stats"' in line)
    assert stats["received_messages"] == 50
    assert stats["message_sizes"] == {"1000": 50}
    assert stats["received_bytes"] == 50_000


def test_nothing_listening_exits_refused_with_its_meaning() -> None:
    result = run_vsockctl("connect", f"1:{free_port()}", stdin=subprocess.DEVNULL)
    assert result.returncode == ExitStatus.CONNECTION_REFUSED
    assert b"nothing listens on that CID:port" in result.stderr
    assert b"(ECONNRESET)" in result.stderr
    assert result.stderr.count(b"\n") == 1


def test_probe_reports_each_port() -> None:
    with listen(VsockAddress(LOCAL, 0xFFFFFFFF)) as server:
        open_port = server.getsockname()[1]
        closed = free_port()
        result = run_vsockctl("--json", "connect", "--probe", f"1:{open_port},{closed}")
    records = {r["port"]: r for r in json_records(result.stdout)}
    assert records[open_port]["open"] is True
    assert records[closed]["open"] is False and records[closed]["errno_name"] == "ECONNRESET"
    assert result.returncode == ExitStatus.CONNECTION_REFUSED
    with listen(VsockAddress(LOCAL, 0xFFFFFFFF)) as server:
        port = server.getsockname()[1]
        assert run_vsockctl("connect", "-z", f"1:{port}").returncode == 0


def test_retry_waits_for_a_late_listener() -> None:
    port = free_port()
    received: list[bytes] = []

    def late() -> None:
        time.sleep(1.5)
        with listen(VsockAddress(LOCAL, port)) as server:
            conn, _ = accept(server)
            with conn:
                received.append(conn.recv(100))

    thread = threading.Thread(target=late)
    thread.start()
    result = run_vsockctl(
        "send", "--to", f"1:{port}", "--retry", "40", "--retry-delay", "100ms", input=b"late"
    )
    thread.join(30)
    assert result.returncode == 0, result.stderr
    assert received == [b"late"]


def test_probe_retry_waits_until_every_port_accepts() -> None:
    early, late_port = free_port(), free_port()
    with listen(VsockAddress(LOCAL, early)):
        ready = threading.Event()

        def late() -> None:
            time.sleep(1.5)
            with listen(VsockAddress(LOCAL, late_port)):
                ready.wait(30)

        thread = threading.Thread(target=late)
        thread.start()
        try:
            result = run_vsockctl(
                "connect", "-z", f"1:{early},{late_port}", "--retry", "40", "--retry-delay", "100ms"
            )
        finally:
            ready.set()
            thread.join(30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert [line.split()[:2] for line in lines] == [
        [f"1:{early}", "open"],
        [f"1:{late_port}", "open"],
    ]
    # Without a late listener, the retries run out and the refusal stands.
    gone = run_vsockctl("connect", "-z", f"1:{late_port}", "--retry", "2", "--retry-delay", "10ms")
    assert gone.returncode == ExitStatus.CONNECTION_REFUSED


def test_peer_vanishing_mid_transfer_gives_connection_lost_and_partial_stats() -> None:
    with listen(VsockAddress(LOCAL, 0xFFFFFFFF)) as server:
        port = server.getsockname()[1]

        def read_a_little_then_vanish() -> None:
            conn, _ = accept(server)
            got = 0
            while got < 1 << 20:
                got += len(conn.recv(65536))
            conn.close()

        thread = threading.Thread(target=read_a_little_then_vanish)
        thread.start()
        result = run_vsockctl("send", "--to", f"1:{port}", "--size", "1G")
        thread.join(30)
    assert result.returncode == ExitStatus.CONNECTION_LOST, result.stderr
    lines = result.stderr.decode().splitlines()
    assert lines[0].startswith("partial: sent ")
    assert lines[-1].startswith("vsockctl: send 1:") and "Traceback" not in result.stderr.decode()


def test_full_disk_is_one_line_with_partial_stats() -> None:
    port = str(free_port())
    with process(_cmd("recv", "--port", port, "/dev/full"), stderr=subprocess.PIPE) as receiver:
        subprocess.run(
            _cmd("send", "--to", f"1:{port}", "--size", "8M", *RETRY),
            timeout=60,
            capture_output=True,
        )
        _, err = receiver.communicate(timeout=60)
    assert receiver.returncode == ExitStatus.ERROR
    assert err.decode().splitlines()[-1] == (
        "vsockctl: writing /dev/full failed: No space left on device"
    )


def test_a_reader_that_stops_ends_recv_quietly_with_141_and_its_stats() -> None:
    """As 'cat | head' ends: no 'Broken pipe', no traceback; what arrived is said."""
    port = str(free_port())
    script = (
        f"{' '.join(_cmd('recv', '--port', port))} | head -c 10 >/dev/null; "
        "echo status=${PIPESTATUS[0]} >&2"
    )
    with process(["bash", "-c", script], stderr=subprocess.PIPE) as pipeline:
        subprocess.run(
            _cmd("send", "--to", f"1:{port}", "--size", "64M", *RETRY),
            timeout=60,
            capture_output=True,
        )
        _, err = pipeline.communicate(timeout=60)
    text = err.decode()
    assert "status=141" in text, text
    assert "partial: received" in text
    assert "vsockctl:" not in text and "Broken pipe" not in text, text
    assert "Traceback" not in text and "Exception ignored" not in text


@pytest.mark.parametrize(
    ("signum", "status", "last_line"),
    [
        (signal.SIGINT, ExitStatus.INTERRUPTED, "vsockctl: interrupted"),
        (signal.SIGTERM, ExitStatus.TERMINATED, "vsockctl: terminated by SIGTERM"),
        (signal.SIGHUP, ExitStatus.HANGUP, "vsockctl: terminated by SIGHUP"),
    ],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_a_stop_signal_flushes_what_arrived_and_reports_it(
    tmp_path: Path, signum: int, status: ExitStatus, last_line: str
) -> None:
    out = tmp_path / "partial.bin"
    port = free_port()
    with (
        process(_cmd("recv", "--port", str(port), str(out)), stderr=subprocess.PIPE) as receiver,
        connect_when_listening(VsockAddress(LOCAL, port)) as sock,
    ):
        sock.sendall(b"q" * (1 << 20))
        deadline = time.monotonic() + 30
        while (not out.exists() or out.stat().st_size < 1 << 20) and time.monotonic() < deadline:
            time.sleep(0.05)
        receiver.send_signal(signum)
        _, err = receiver.communicate(timeout=30)
    assert receiver.returncode == status
    lines = err.decode().splitlines()
    assert lines[-2].startswith("partial: received 1.0 MiB (1048576 bytes)")
    assert lines[-1] == last_line
    assert out.read_bytes() == b"q" * (1 << 20)


def test_exec_serves_each_connection_with_a_command() -> None:
    port = free_port()
    with process(_cmd("listen", "--port", str(port), "-k", "--exec", "tr a-z A-Z")) as server:
        for word in (b"hello", b"again"):
            with connect_when_listening(VsockAddress(LOCAL, port)) as sock:
                sock.sendall(word)
                sock.shutdown(socket.SHUT_WR)
                assert sock.recv(100) == word.upper()
        assert server.poll() is None  # still serving


def test_max_clients_serves_several_at_once(tmp_path: Path) -> None:
    out = tmp_path / "all.bin"
    port = str(free_port())
    with process(_cmd("listen", "--port", port, "--max-clients", "3", "-o", str(out))):
        senders = [
            vsockctl("send", "--to", f"1:{port}", "--size", "1M", *RETRY, stderr=subprocess.DEVNULL)
            for _ in range(3)
        ]
        assert [s.wait(timeout=120) for s in senders] == [0, 0, 0]
    assert out.stat().st_size == 3 << 20


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "vsockctl", *args]


def _wait_until_bound(port: int, deadline: float = 20.0) -> None:
    """Wait until a port is bound (a receiver started), without connecting to it."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as probe:
                probe.bind((LOCAL, port))
        except OSError:
            return  # EADDRINUSE: the receiver holds it
        time.sleep(0.05)
    raise TimeoutError(f"nothing bound port {port}")
