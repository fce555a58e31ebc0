"""A new user's papercuts that need real vsock traffic (issue 25), over CID 1 in the VM.

The output file keeps its old bytes until new ones arrive, and is cut to exactly
what arrived; a relay cut short prints its stats; info tries a sockmap on a real
connection; ls's table is plain when piped and fits a terminal.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.peers import (
    LOCAL,
    connect_when_listening,
    free_port,
    pattern,
    read_until_listening,
    run_vsockctl,
    vsockctl,
)
from tests.records import json_record
from tests.test_tables import on_terminal
from vsockctl.exit_status import ExitStatus
from vsockctl.vsock.address import VsockAddress

pytestmark = [pytest.mark.vsock, pytest.mark.timeout(120)]

OLD = pattern(1 << 20, seed=9)  # a file with a MiB in it already


def receive_into(path: Path, payload: bytes | None, *options: str) -> tuple[int, str]:
    """``recv --port P PATH OPTIONS`` while a sender connects and sends ``payload``
    (None: connects and closes at once); recv's status and stderr."""
    port = free_port()
    proc = vsockctl(
        "--json", "recv", "--port", str(port), str(path), *options,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    read_until_listening(proc.stdout)
    with connect_when_listening(VsockAddress(LOCAL, port)) as sock:
        if payload:
            sock.sendall(payload)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err.decode()


@pytest.mark.parametrize("sha", [[], ["--sha256"]], ids=["spliced", "written"])
def test_a_shorter_transfer_over_a_longer_file_leaves_exactly_the_new_bytes(
    tmp_path: Path, sha: list[str]
) -> None:
    target = tmp_path / "out"
    target.write_bytes(OLD)
    new = pattern(300_000, seed=3)
    status, err = receive_into(target, new, *sha)
    assert status == 0, err
    assert target.read_bytes() == new  # cut to what arrived, nothing of the old tail


def test_a_sender_that_sends_nothing_then_fails_the_check_leaves_the_file(
    tmp_path: Path,
) -> None:
    target = tmp_path / "out"
    target.write_bytes(OLD)
    status, err = receive_into(target, None, "--expect-bytes", "10")
    assert status == ExitStatus.DATA_MISMATCH, err
    assert target.read_bytes() == OLD


def test_bytes_that_came_before_a_failure_are_kept_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_bytes(OLD)
    status, err = receive_into(target, b"12345", "--expect-bytes", "10")
    assert status == ExitStatus.DATA_MISMATCH, err
    assert target.read_bytes() == b"12345"


def test_an_empty_transfer_that_succeeds_empties_the_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_bytes(OLD)
    status, err = receive_into(target, None)
    assert status == 0, err
    assert target.read_bytes() == b""


def test_listen_interrupted_with_a_client_prints_the_stats(tmp_path: Path) -> None:
    port = free_port()
    proc = vsockctl(
        "listen", "--port", str(port), "-o", str(tmp_path / "got"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    with connect_when_listening(VsockAddress(LOCAL, port)) as sock:
        sock.sendall(b"x" * 5000)
        got = tmp_path / "got"
        for _ in range(200):  # until listen has written what came
            if got.exists() and got.stat().st_size == 5000:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    text = err.decode()
    assert proc.returncode == ExitStatus.INTERRUPTED, text
    assert "partial: " in text and "received 4.9 KiB (5000 bytes)" in text, text
    assert got.read_bytes() == b"x" * 5000


def test_received_data_into_a_full_stdout_is_one_line_and_the_stats(tmp_path: Path) -> None:
    port = free_port()
    with open("/dev/full", "wb") as full:
        proc = vsockctl("recv", "--port", str(port), stdout=full, stderr=subprocess.PIPE)
        sock = connect_when_listening(VsockAddress(LOCAL, port))
        with sock, contextlib.suppress(OSError):  # recv gave up and closed: the point
            sock.sendall(pattern(1 << 20))
        _, err = proc.communicate(timeout=60)
    text = err.decode()
    assert proc.returncode == ExitStatus.ERROR, text
    assert text.splitlines()[-1] == "vsockctl: writing stdout failed: No space left on device"
    assert "partial: " in text and "Traceback" not in text


def test_info_tries_a_sockmap_on_a_real_connection() -> None:
    result = run_vsockctl("--json", "info")
    record = json_record(result.stdout)
    (sockmap,) = [f for f in record["features"] if f["name"] == "sockmap"]
    assert sockmap["available"] in (True, False), sockmap  # tried, whatever the answer
    assert "over CID 1" in sockmap["how"] or "BPF_MAP_UPDATE_ELEM" in sockmap["how"]
    assert record["modules"]["vsock_loopback"] == "loaded"


def test_ls_table_is_plain_when_piped_and_fits_a_terminal() -> None:
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as server:
        server.bind((LOCAL, socket.VMADDR_PORT_ANY))
        server.listen()
        port = server.getsockname()[1]
        piped = run_vsockctl("ls", "--port", str(port)).stdout.decode().splitlines()
        narrow = on_terminal(["ls", "--port", str(port)], 60)
    assert len(piped) == 2 and all(line == line.rstrip() for line in piped), piped
    assert f"1:{port}" in piped[1].split()
    assert max(len(line) for line in narrow) <= 60, narrow
    assert any(f"1:{port}" in line.split() for line in narrow), narrow
