"""forward on the host tier: addresses, the engine and the command, over Unix sockets only
(hybrid vsock through FakeVmm). TCP and vsock forwarding run in the VM tier."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import Invoke
from tests.fake_vmm import FakeVmm, unix_guest
from tests.forward_peers import DigestServer, digest_through, forwarding
from tests.peers import pattern, recv_all, vsockctl
from vsockctl.events.catalog import validate
from vsockctl.events.forward import Outcome
from vsockctl.exit_status import ExitStatus
from vsockctl.forward.flow import Allow
from vsockctl.forward.sides import TcpSide, UnixSide, VsockSide, parse_side
from vsockctl.vsock.address import AddressError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: Unix socket paths are limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="vsk", dir="/tmp") as name:
        yield Path(name)


def unix_server(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(128)
    return sock


def unix_client(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    return sock


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("tcp:127.0.0.1:8080", "tcp:127.0.0.1:8080"),
        ("tcp:[::1]:8080", "tcp:[::1]:8080"),
        ("tcp:localhost:80", "tcp:localhost:80"),
        ("unix:/run/app.sock", "unix:/run/app.sock"),
        ("vsock:3:80", "vsock:3:80"),
        ("3:80", "vsock:3:80"),
        ("host:1024", "vsock:2:1024"),
        ("vsock:any:any", "vsock:any:any"),
        ("uds:/run/fc.sock:22", "uds:/run/fc.sock:22"),
    ],
)
def test_each_scheme_parses_and_shows_itself(text: str, shown: str) -> None:
    side = parse_side(text)
    assert str(side) == shown
    assert parse_side(shown) == side


def test_sides_keep_their_parts() -> None:
    assert parse_side("tcp:[::1]:8080") == TcpSide("::1", 8080)
    assert parse_side("unix:/a:b") == UnixSide("/a:b")
    side = parse_side("uds:/run/fc:x.sock:22")
    assert isinstance(side, VsockSide) and side.route.uds == "/run/fc:x.sock"
    assert side.route.port == 22


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ftp:1:2", "unknown scheme 'ftp'"),
        ("tcp:127.0.0.1", "lacks a host or a port"),
        ("tcp:::1:80", "in brackets"),
        ("tcp:[::1]80", "tcp:[ADDRESS]:PORT"),
        ("tcp:h:http", "not a number"),
        ("tcp:h:-1", "to 65535"),
        ("tcp:h:70000", "to 65535"),
        ("unix:", "path"),
        ("uds:/run/fc.sock", "guest's port"),
        ("vsock:3", "CID:PORT"),
        ("8080", "not an address"),
    ],
)
def test_bad_addresses_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(AddressError, match=re.escape(says)):
        parse_side(text)


def test_allow_matches_cids_and_networks() -> None:
    cids = Allow(cids=frozenset({3}))
    assert cids.permits(40, (3, 1234)) and not cids.permits(40, (1, 1234))
    nets = Allow(networks=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1")))
    assert nets.permits(socket.AF_INET, ("10.1.2.3", 5))
    assert nets.permits(socket.AF_INET6, ("::ffff:10.9.9.9", 5, 0, 0))  # v4-mapped
    assert nets.permits(socket.AF_INET6, ("::1", 5, 0, 0))
    assert not nets.permits(socket.AF_INET, ("127.0.0.1", 5))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["ftp:1:2", "unix:/tmp/x"], "unknown scheme"),
        (["unix:/tmp/x", "tcp:127.0.0.1"], "lacks a host or a port"),
        (["--allow", "3", "unix:/tmp/x", "unix:/tmp/y"], "no address to allow"),
        (["--allow", "10.0.0.0/33", "tcp:127.0.0.1:9", "unix:/tmp/y"], "--allow"),
        (["--allow", "nine", "vsock:any:9", "unix:/tmp/y"], "--allow"),
    ],
)
def test_bad_command_lines_exit_2_in_one_line(invoke: Invoke, args: list[str], says: str) -> None:
    result = invoke(["forward", *args])
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output


def test_a_listener_in_use_exits_1_as_recv_does_with_a_hint_for_its_family(
    invoke: Invoke, short_dir: Path
) -> None:
    with unix_server(short_dir / "busy"):
        result = invoke(["forward", f"unix:{short_dir}/busy", f"unix:{short_dir}/t"])
    assert result.exit_code == ExitStatus.ERROR, result.output
    assert "(EADDRINUSE)" in result.output and "ss -lxp" in result.output
    assert "vsockctl ls" not in result.output


def test_a_file_that_is_not_a_socket_is_never_replaced(invoke: Invoke, short_dir: Path) -> None:
    (short_dir / "data").write_text("keep me")
    result = invoke(["forward", f"unix:{short_dir}/data", f"unix:{short_dir}/t"])
    assert result.exit_code == 1 and "not a socket" in result.output
    assert (short_dir / "data").read_text() == "keep me"


def test_100_concurrent_connections_each_byte_exact(short_dir: Path) -> None:
    target = DigestServer(unix_server(short_dir / "t"))
    payloads = [pattern(1 << 20, seed) for seed in range(100)]
    with forwarding(UnixSide(f"{short_dir}/l"), UnixSide(f"{short_dir}/t")) as (fwd, rec, _):
        with ThreadPoolExecutor(100) as pool:
            answers = list(
                pool.map(
                    lambda p: digest_through(lambda: unix_client(short_dir / "l"), p), payloads
                )
            )
        closed = rec.wait_for("closed", 100)
    target.close()
    assert answers == [hashlib.sha256(p).digest() for p in payloads]
    assert {flow.outcome for flow in closed} == {Outcome.DONE}
    assert sorted(flow.upstream.bytes for flow in closed) == [1 << 20] * 100
    assert fwd.totals.opened == 100 and fwd.totals.upstream.bytes == 100 << 20


def test_a_short_connection_is_served_by_the_loop_and_a_long_one_by_threads(
    short_dir: Path,
) -> None:
    """A few bytes each way never leave the event loop; a MiB is handed to two workers
    mid-stream, with the bytes the loop had read and not yet sent going first."""
    target = DigestServer(unix_server(short_dir / "t"))
    payload = pattern(1 << 20, 7)
    with forwarding(UnixSide(f"{short_dir}/l"), UnixSide(f"{short_dir}/t")) as (fwd, rec, _):
        short = digest_through(lambda: unix_client(short_dir / "l"), b"ping")
        rec.wait_for("closed", 1)
        threads_for_short = fwd._workers.started
        long = digest_through(lambda: unix_client(short_dir / "l"), payload)
        closed = rec.wait_for("closed", 2)
    target.close()
    assert short == hashlib.sha256(b"ping").digest()
    assert long == hashlib.sha256(payload).digest()
    assert threads_for_short == 0
    assert fwd._workers.started == 2
    assert [(f.upstream.bytes, f.downstream.bytes) for f in closed] == [(4, 32), (1 << 20, 32)]


def test_failed_connects_give_their_slots_back(short_dir: Path) -> None:
    with forwarding(UnixSide(f"{short_dir}/l"), UnixSide(f"{short_dir}/t"), max_connections=2) as (
        fwd,
        rec,
        _,
    ):
        for _ in range(5):
            assert digest_through(lambda: unix_client(short_dir / "l"), b"lost") == b""
        rec.wait_for("failed", 5)
        target = DigestServer(unix_server(short_dir / "t"))
        answers = [digest_through(lambda: unix_client(short_dir / "l"), b"x") for _ in range(3)]
        target.close()
    assert answers == [hashlib.sha256(b"x").digest()] * 3
    assert (fwd.totals.failed, fwd.totals.opened) == (5, 3)


def test_waiting_clients_are_taken_together_but_never_past_the_limit(short_dir: Path) -> None:
    """Clients already waiting are accepted in one wake-up, up to --max-connections;
    the rest wait in the backlog until a connection ends."""
    target = DigestServer(unix_server(short_dir / "t"))
    with forwarding(UnixSide(f"{short_dir}/l"), UnixSide(f"{short_dir}/t"), max_connections=2) as (
        fwd,
        rec,
        _,
    ):
        clients = [unix_client(short_dir / "l") for _ in range(6)]  # all in the backlog
        for client in clients:
            client.sendall(b"x")
        rec.wait_for("opened", 2)
        time.sleep(0.3)  # time to take more, were the limit not kept
        opened_first = fwd.totals.opened
        answers = []
        for client in clients:
            with client:
                client.shutdown(socket.SHUT_WR)
                answers.append(recv_all(client))
        rec.wait_for("closed", 6)
    target.close()
    assert opened_first == 2
    assert answers == [hashlib.sha256(b"x").digest()] * 6
    assert fwd.totals.opened == 6


def test_half_close_leaves_the_other_direction_open(short_dir: Path) -> None:
    """The target answers first, then reads to the client's end, then answers again."""
    target = DigestServer(unix_server(short_dir / "t"), reply=b"hello")
    with forwarding(UnixSide(f"{short_dir}/l"), UnixSide(f"{short_dir}/t")) as (_, rec, _):
        answer = digest_through(lambda: unix_client(short_dir / "l"), b"x" * 70000)
        (flow,) = rec.wait_for("closed", 1)
    target.close()
    assert answer == b"hello" + hashlib.sha256(b"x" * 70000).digest()
    assert (flow.upstream.bytes, flow.downstream.bytes, flow.outcome) == (70000, 37, Outcome.DONE)


def test_an_absent_target_fails_that_client_and_the_forwarder_serves_on(short_dir: Path) -> None:
    with forwarding(UnixSide(f"{short_dir}/l"), UnixSide(f"{short_dir}/t")) as (fwd, rec, _):
        assert digest_through(lambda: unix_client(short_dir / "l"), b"lost") == b""
        (error,) = rec.wait_for("failed", 1)
        assert "connect unix:" in str(error)
        target = DigestServer(unix_server(short_dir / "t"))
        answer = digest_through(lambda: unix_client(short_dir / "l"), b"found")
        target.close()
    assert answer == hashlib.sha256(b"found").digest()
    assert (fwd.totals.failed, fwd.totals.opened) == (1, 1)


def test_a_target_going_away_ends_its_connections_only(short_dir: Path) -> None:
    target = DigestServer(unix_server(short_dir / "t"), reply=b"hi")
    with forwarding(UnixSide(f"{short_dir}/l"), UnixSide(f"{short_dir}/t")) as (_, rec, _):
        clients = [unix_client(short_dir / "l") for _ in range(3)]
        for client in clients:
            assert client.recv(2) == b"hi"
        target.close()  # every connection cut while the clients still send
        for client in clients:
            with client:
                for _ in range(200):  # until our relay meets the closed target
                    try:
                        client.sendall(b"y" * 65536)
                    except OSError:
                        break
        closed = rec.wait_for("closed", 3)
    assert {flow.outcome for flow in closed} == {Outcome.TARGET_ERROR}
    assert all(flow.error is not None for flow in closed)


def test_a_client_vanishing_is_its_own_error(short_dir: Path) -> None:
    target = DigestServer(unix_server(short_dir / "t"), reply=b"z" * (4 << 20))
    with forwarding(UnixSide(f"{short_dir}/l"), UnixSide(f"{short_dir}/t")) as (_, rec, _):
        client = unix_client(short_dir / "l")
        client.recv(1)
        client.close()  # with 4 MiB still coming its way
        (flow,) = rec.wait_for("closed", 1)
    target.close()
    assert flow.outcome == Outcome.CLIENT_ERROR


def test_stop_ends_open_connections_as_stopped(short_dir: Path) -> None:
    target = DigestServer(unix_server(short_dir / "t"))
    with forwarding(UnixSide(f"{short_dir}/l"), UnixSide(f"{short_dir}/t")) as (fwd, rec, _):
        idle = unix_client(short_dir / "l")
        rec.wait_for("opened", 1)
        fwd.stop()
        (flow,) = rec.wait_for("closed", 1)
    target.close()
    assert flow.outcome == Outcome.STOPPED
    with idle:
        assert recv_all(idle) == b""  # the client sees the end
    assert not (short_dir / "l").exists()


def test_hybrid_target_through_the_fake_vmm(short_dir: Path) -> None:
    guest = DigestServer(unix_server(short_dir / "guest_22"))
    with FakeVmm(short_dir / "fc.sock", unix_guest(short_dir)) as vmm:
        target = parse_side(f"uds:{short_dir}/fc.sock:22")
        with forwarding(UnixSide(f"{short_dir}/l"), target) as (_, rec, _):
            answer = digest_through(lambda: unix_client(short_dir / "l"), b"ssh?")
            assert digest_through(lambda: unix_client(short_dir / "l"), b"") != b""
            rec.wait_for("closed", 2)
            bad = parse_side(f"uds:{short_dir}/fc.sock:23")  # nothing listens on 23
        with forwarding(UnixSide(f"{short_dir}/m"), bad) as (_, rec, _):
            assert digest_through(lambda: unix_client(short_dir / "m"), b"x") == b""
            (error,) = rec.wait_for("failed", 1)
    guest.close()
    assert answer == hashlib.sha256(b"ssh?").digest()
    assert vmm.requests[0] == b"CONNECT 22\n"
    assert "closed without OK" in str(error)


def test_hybrid_listener_takes_the_guests_connections(short_dir: Path) -> None:
    """As LISTEN, uds:PATH:PORT listens on PATH_PORT, where the VMM delivers CID 2 PORT."""
    target = DigestServer(unix_server(short_dir / "t"))
    listen = parse_side(f"uds:{short_dir}/fc.sock:5000")
    with forwarding(listen, UnixSide(f"{short_dir}/t")) as (_, rec, _):
        answer = digest_through(lambda: unix_client(short_dir / "fc.sock_5000"), b"from guest")
        (flow,) = rec.wait_for("closed", 1)
    target.close()
    assert answer == hashlib.sha256(b"from guest").digest()
    assert flow.peer.startswith(f"uds:{short_dir}/fc.sock:5000 pid ")
    assert not (short_dir / "fc.sock_5000").exists()


def test_sigterm_closes_reports_and_removes_the_socket_file(short_dir: Path) -> None:
    target = DigestServer(unix_server(short_dir / "t"), reply=b"ready")
    listen = short_dir / "l"
    proc = vsockctl(
        "--json",
        "forward",
        f"unix:{listen}",
        f"unix:{short_dir}/t",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    assert first["event"] == "forwarding", first
    client = unix_client(listen)
    client.sendall(b"a" * 1000)
    assert client.recv(5) == b"ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    target.close()
    records = [first, *(json.loads(line) for line in out.splitlines())]
    assert proc.returncode == 143, err
    assert all(validate(r) == [] for r in records)
    kinds = [r["event"] for r in records]
    assert kinds == ["forwarding", "forward_opened", "forward_closed", "forward_totals", "error"]
    closed, totals = records[2], records[3]
    assert closed["outcome"] == "stopped" and closed["from_client_bytes"] == 1000
    assert totals["connections"] == 1 and totals["to_client_bytes"] == 5
    assert records[4]["exit_status"] == 143
    assert b"Traceback" not in err
    assert not listen.exists()
    assert recv_all(client) == b""
    client.close()


def run_forward_briefly(listen: Path, target: Path, *options: str) -> str:
    """Two clients through ``vsockctl forward``, then Ctrl-C; its stderr."""
    proc = vsockctl("forward", *options, f"unix:{listen}", f"unix:{target}", stderr=subprocess.PIPE)
    while not listen.exists():
        time.sleep(0.05)
    for _ in range(2):
        digest_through(lambda: unix_client(listen), b"abc")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    return err.decode()


def test_a_line_per_event_and_with_q_only_failures(short_dir: Path) -> None:
    target = DigestServer(unix_server(short_dir / "t"))
    loud = run_forward_briefly(short_dir / "l", short_dir / "t")
    target.close()
    assert "forwarding unix:" in loud and ": opened to unix:" in loud
    assert loud.count("3 B from the client, 32 B to it (done)") == 2
    assert "forwarded 2 connections (0 failed, 0 refused)" in loud
    quiet = run_forward_briefly(short_dir / "m", short_dir / "absent", "-q")
    lines = quiet.splitlines()
    assert len(lines) == 3 and all(line.startswith("vsockctl: ") for line in lines), lines
    assert "cannot reach unix:" in lines[0] and lines[2] == "vsockctl: interrupted"
