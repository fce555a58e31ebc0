"""The README's traffic examples, run in the VM: CID 3 (a guest) becomes CID 1 (loopback)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.readme import sections, without_comment
from tests.records import json_records

pytestmark = [pytest.mark.vsock, pytest.mark.timeout(180)]

BIN = Path(sys.executable).parent

# Headings whose block is "receiver, then sender" (one machine plays both ends here).
PAIRS = [
    "Copy a file from the host to a guest",
    "Measure a transfer with generated data",
    "Message boundaries (seqpacket)",
]


def localise(line: str) -> str:
    """The example aimed at CID 1 instead of a guest's CID 3."""
    line = without_comment(line)
    line = re.sub(r"--cid 3\b", "--cid 1", line)
    line = line.replace("1G", "64M")  # the same example, sized for an emulated CPU
    return re.sub(r"(?<![\w.])3:", "1:", line)


def shell(line: str, cwd: Path, **kwargs: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        ["bash", "-c", f"set -o pipefail; {line}"], cwd=cwd, env=env, **kwargs
    )


def wait_listening(port: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        out = subprocess.run(
            [str(BIN / "vsockctl"), "-q", "ls", "--listening", "--port", port],
            capture_output=True,
        ).stdout
        if out.strip():
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listened on {port}")


@pytest.mark.parametrize("heading", PAIRS)
def test_receiver_and_sender_examples_work(heading: str, tmp_path: Path) -> None:
    receiver_line, sender_line = (localise(x) for x in sections()[heading][:2])
    guest, host = tmp_path / "guest", tmp_path / "host"
    guest.mkdir()
    host.mkdir()
    (host / "disk.img").write_bytes(os.urandom(1 << 20))
    port = re.search(r"--port (\d+)", receiver_line)
    assert port is not None, receiver_line
    receiver = shell(receiver_line, guest, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port.group(1))
        sender = shell(sender_line, host, stderr=subprocess.PIPE)
        _, sender_err = sender.communicate(timeout=120)
        _, receiver_err = receiver.communicate(timeout=60)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate()
    assert sender.returncode == 0, (sender_line, sender_err)
    assert receiver.returncode == 0, (receiver_line, receiver_err)
    if "disk.img" in receiver_line:
        assert (guest / "disk.img").read_bytes() == (host / "disk.img").read_bytes()


PROBES = sections()["Probe a range of ports"]
BENCHES = [line for line in sections()["Measure throughput and latency"] if "--loopback" in line]


def test_the_readme_has_the_examples_these_tests_run() -> None:
    """A section emptied or renamed fails here, not as tests that run nothing."""
    assert len(PROBES) >= 2 and len(BENCHES) >= 2
    assert any("--bytes 64M" in localise(line) for line in BENCHES)
    assert any("--latency" in line for line in BENCHES)
    for heading in PAIRS:
        assert len(sections()[heading]) >= 2, heading


@pytest.mark.parametrize("line", PROBES)
def test_probe_examples_answer_with_documented_statuses(line: str, tmp_path: Path) -> None:
    result = shell(localise(line), tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = result.communicate(timeout=120)
    assert result.returncode == 4, (line, err)  # nothing listens on those ports here
    assert b"Traceback" not in err and out


@pytest.mark.parametrize("line", BENCHES)
def test_loopback_bench_examples(line: str, tmp_path: Path) -> None:
    line = localise(line)
    if "--latency" in line:
        line += " --time 2s"
    result = shell(line + " --json", tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = result.communicate(timeout=120)
    assert result.returncode == 0, (line, err)
    summary = json_records(out)[-1]
    assert summary["event"] == "summary" and summary["complete"], summary
    if "--bytes 64M" in line:
        (direction,) = summary["directions"]
        assert direction["receiver"]["bytes"] == direction["sender"]["bytes"] == 64 << 20
    else:
        assert summary["latency"]["round_trips"] > 0
