"""Running as a service over real vsock, with systemd's own tools: systemd-socket-activate
(252) passing a vsock socket to throughput server and listen, and systemd-notify
(254, bookworm-backports', unpacked) sending a guest's notifications over vsock
to wait-ready, as systemd in a guest does."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.peers import free_port, run_vsockctl, stop_process, vsockctl, vsockctl_args
from tests.records import json_records
from tests.service_peers import ManagerSocket, socket_activated, systemd_notify_254
from tests.test_service import sample, scrape_until

pytestmark = pytest.mark.vsock


def test_throughput_server_socket_activated_on_vsock_with_metrics() -> None:
    port = free_port()
    with socket_activated(f"vsock:1:{port}", "--json", "throughput", "server",
                          "--metrics", "tcp:127.0.0.1:0") as server:  # fmt: skip
        client = run_vsockctl("--json", "throughput", "client", f"1:{port}", "--bytes", "8M",
                              "--retry", "40", "--retry-delay", "250ms")  # fmt: skip
        assert client.returncode == 0, client.stderr
        assert server.stdout is not None
        records = _records_until(server.stdout, "test_done")
        url = next(r["url"] for r in records if r["event"] == "metrics")
        families = scrape_until(url, "vsockctl_throughput_tests_total", 1, outcome="done")
        listening = next(r for r in records if r["event"] == "listening")
    assert listening["port"] == port  # the socket systemd opened, not one of its own
    assert sample(families, "vsockctl_throughput_bytes_total", direction="received") == 8 << 20
    assert sample(families, "vsockctl_throughput_tests_total", outcome="failed") == 0


def _records_until(stream: Any, event: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    while not records or records[-1]["event"] != event:
        line = stream.readline()
        assert line, records
        records.append(json.loads(line))
    return records


def test_listen_socket_activated_on_vsock_tells_the_manager(tmp_path: Path) -> None:
    manager = ManagerSocket(tmp_path / "notify")
    port = free_port()
    env = {"NOTIFY_SOCKET": str(manager.path)}
    with socket_activated(f"vsock:1:{port}", "listen", "-k", "--exec", "cat", env=env) as proc:
        echoed = run_vsockctl("connect", f"1:{port}", "--retry", "40", "--retry-delay", "250ms",
                              input=b"through systemd\n")  # fmt: skip
        ready = manager.until(lambda m: "READY" in m)
        proc.terminate()
        stopping = manager.until(lambda m: "STOPPING" in m)
    manager.close()
    assert echoed.stdout == b"through systemd\n", echoed.stderr
    assert ready["READY"] == "1" and ready["STATUS"].endswith("served"), ready
    assert stopping["STOPPING"] == "1"


def waiting(*extra: str) -> Any:
    """wait-ready on a fresh port (--json): the process and its port, once it waits."""
    port = free_port()
    proc = vsockctl("--json", "wait-ready", "--port", str(port), "--timeout", "120s", *extra,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["event"] == "waiting_ready", first
        return proc, port, first
    except BaseException:
        stop_process(proc)
        raise


@pytest.mark.parametrize("scheme", ["vsock", "vsock-stream", "vsock-seqpacket"])
def test_wait_ready_hears_systemd_notify(scheme: str) -> None:
    """systemd's own sd_notify: vsock: finds no datagrams here (ENODEV) and sends a
    seqpacket message; vsock-stream: a stream it shuts down and waits on."""
    kind = "stream" if scheme == "vsock-stream" else "seqpacket"
    proc, port, first = waiting("--type", kind)
    try:
        _hears(proc, port, scheme, kind)
    finally:
        stop_process(proc)
    assert first["socket_types"] == [kind], first  # no datagrams on loopback
    assert "dgram" in first["unavailable"]


def _hears(proc: Any, port: int, scheme: str, kind: str) -> None:
    address = f"{scheme}:1:{port}"
    starting = systemd_notify_254(
        address, "--status=Starting", "X_SYSTEMD_UNIT_ACTIVE=basic.target"
    )
    assert starting.returncode == 0, starting.stderr
    ready = systemd_notify_254(address, "--ready", "--status=Up")
    assert ready.returncode == 0, ready.stderr
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    notes = json_records(out, "notification")
    assert [(n["socket_type"], n["ready"]) for n in notes] == [(kind, False), (kind, True)]
    assert notes[0]["fields"] == {"STATUS": "Starting", "X_SYSTEMD_UNIT_ACTIVE": "basic.target"}
    assert notes[1]["fields"]["READY"] == "1" and notes[1]["fields"]["STATUS"] == "Up"


def test_a_forward_tells_wait_ready_over_vsock_that_it_is_up() -> None:
    """vsockctl's own notifications over vsock (NOTIFY_SOCKET=vsock:1:PORT), as a
    service in a guest would send them to its host."""
    proc, port, _ = waiting()
    forward = subprocess.Popen(
        ["env", f"NOTIFY_SOCKET=vsock:1:{port}",
         *vsockctl_args("forward", "tcp:127.0.0.1:0", "tcp:127.0.0.1:9")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        stop_process(proc)
        forward.terminate()
        forward.communicate(timeout=30)
    (note,) = json_records(out, "notification")
    assert note["fields"]["READY"] == "1" and "forwarded" in note["fields"]["STATUS"]
    assert proc.returncode == 0


def test_wait_ready_times_out_over_vsock() -> None:
    started = time.monotonic()
    done = run_vsockctl("wait-ready", "--port", str(free_port()), "--timeout", "2s")
    assert done.returncode == 5 and time.monotonic() - started < 30
    assert b"no READY=1 within 2 s" in done.stderr
