"""Host and guest for real: the test VM (vhost_vsock, CID 2) and a guest inside it (CID 3).

Run by ``scripts/vmtest`` after the 6.12 loopback suite (``--nested``: alone); the
guest boots once per run (``nested_guest`` in conftest.py) and runs vsockctl and
socat through its agent (tests/nested). Bytes are checked byte for byte with SHA-256 on both ends.
"""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.forward_peers import ForwardProcess, digest_through
from tests.nested.agent_client import Completed
from tests.nested.guest import NestedGuest
from tests.peers import pattern, process, run_vsockctl, stop_process, vsockctl, vsockctl_args
from tests.records import json_record, json_records
from vsockctl.exit_status import ExitStatus

pytestmark = [pytest.mark.nested, pytest.mark.timeout(600)]

GUEST = "3"


RETRY = ("--retry", "120", "--retry-delay", "500ms")  # the guest's end is still starting


def finished(guest: NestedGuest, pid: int, timeout: float = 300) -> Completed:
    done = guest.wait(pid, timeout)
    if done.rc is None:
        guest.kill(pid)
        pytest.fail(f"guest program still running after {timeout} s: {done.text[-2000:]}")
    return done


def socat_listener(guest: NestedGuest, port: int, *target: str) -> int:
    """socat listening in the guest; returns once it says so."""
    pid = guest.spawn("socat", "-d", "-d", f"VSOCK-LISTEN:{port},fork,reuseaddr", *target)
    said = guest.wait_for_output(pid, "listening on")
    assert "listening on" in said.text, said.text
    return pid


# -- host to guest ------------------------------------------------------------------------


def test_host_sends_64_mib_to_guest_with_checksums(nested_guest: NestedGuest) -> None:
    receiver = nested_guest.spawn(
        "vsockctl", "recv", "--port", "6001", "--sha256", "--json", "/dev/null"
    )
    sent = run_vsockctl(
        "send", "--cid", GUEST, "--port", "6001", "--size", "64M", "--pattern", "random",
        "--sha256", "--json", *RETRY, timeout=600,
    )  # fmt: skip
    got = finished(nested_guest, receiver)
    assert sent.returncode == 0, sent.stderr
    assert got.rc == 0, got.text
    stats_sent, stats_got = json_record(sent.stdout, "stats"), json_record(got.stdout, "stats")
    assert stats_sent["sent_bytes"] == stats_got["received_bytes"] == 64 << 20
    assert stats_sent["sent_sha256"] == stats_got["received_sha256"] is not None
    assert json_record(got.stdout, "accepted")["peer"].startswith("2:")


def test_connect_relays_through_an_echo_in_the_guest(nested_guest: NestedGuest) -> None:
    echo = socat_listener(nested_guest, 6002, "EXEC:cat")
    try:
        data = pattern(1 << 20, seed=5)
        relayed = run_vsockctl("connect", f"{GUEST}:6002", input=data, timeout=300)
    finally:
        nested_guest.kill(echo)
    assert relayed.returncode == 0, relayed.stderr
    assert relayed.stdout == data


def test_probe_finds_exactly_the_open_guest_ports(nested_guest: NestedGuest) -> None:
    listeners = [socat_listener(nested_guest, port, "EXEC:cat") for port in (6011, 6015)]
    try:
        probed = run_vsockctl("connect", "--probe", f"{GUEST}:6010-6019", "--json", timeout=300)
    finally:
        for pid in listeners:
            nested_guest.kill(pid)
    found = {r["port"]: r for r in json_records(probed.stdout, "probe")}
    assert sorted(found) == list(range(6010, 6020)), probed.stderr
    assert sorted(p for p, r in found.items() if r["open"]) == [6011, 6015]
    assert {r["errno_name"] for r in found.values() if not r["open"]} == {"ECONNRESET"}
    assert probed.returncode == ExitStatus.CONNECTION_REFUSED  # some did not accept


# -- guest to host ------------------------------------------------------------------------


def test_guest_sends_to_the_host_cid_2(nested_guest: NestedGuest) -> None:
    with process(
        vsockctl_args("recv", "--port", "6003", "--sha256", "--json", "/dev/null"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as receiver:
        sender = nested_guest.spawn(
            "vsockctl", "send", "--to", "2:6003", "--size", "16M", "--pattern", "random",
            "--sha256", "--json", *RETRY,
        )  # fmt: skip
        got_out, got_err = receiver.communicate(timeout=600)
    sent = finished(nested_guest, sender)
    assert sent.rc == 0, sent.text
    assert receiver.returncode == 0, got_err
    stats_sent, stats_got = json_record(sent.stdout, "stats"), json_record(got_out, "stats")
    assert stats_sent["sent_bytes"] == stats_got["received_bytes"] == 16 << 20
    assert stats_sent["sent_sha256"] == stats_got["received_sha256"] is not None
    assert json_record(got_out, "accepted")["peer"].startswith(
        "3:"
    )  # the host sees the guest's CID


def test_guest_connects_to_a_listen_on_the_host(nested_guest: NestedGuest) -> None:
    data = pattern(256 << 10, seed=6)
    with process(
        vsockctl_args("listen", "--port", "6004"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as listener:
        client = nested_guest.spawn("vsockctl", "connect", "2:6004", *RETRY, stdin=data)
        got_out, got_err = listener.communicate(timeout=600)
    done = finished(nested_guest, client)
    assert done.rc == 0, done.text
    assert listener.returncode == 0, got_err
    assert got_out == data
    assert b"connection from 3:" in got_err


def test_seqpacket_keeps_message_boundaries_over_virtio(nested_guest: NestedGuest) -> None:
    receiver = nested_guest.spawn(
        "vsockctl", "recv", "--port", "6005", "--type", "seqpacket", "--json", "/dev/null"
    )
    sent = run_vsockctl(
        "send", "--to", f"{GUEST}:6005", "--type", "seqpacket", "--message-size", "3000",
        "--count", "200", "--json", *RETRY, timeout=600,
    )  # fmt: skip
    got = finished(nested_guest, receiver)
    assert sent.returncode == 0, sent.stderr
    assert got.rc == 0, got.text
    stats = json_record(got.stdout, "stats")
    assert stats["received_messages"] == 200
    assert stats["message_sizes"] == {"3000": 200}


# -- info and ls ----------------------------------------------------------------------------


def test_info_on_both_ends(nested_guest: NestedGuest) -> None:
    host = run_vsockctl("info", "--json")
    guest = nested_guest.run("vsockctl", "info", "--json")
    assert host.returncode == 0 and guest.rc == 0, (host.stderr, guest.text)
    host_info, guest_info = json_record(host.stdout, "info"), json_record(guest.stdout, "info")
    present = {t["module"] for t in host_info["transports"] if t["available"]}
    assert "vhost_vsock" in present
    assert "host" in host_info["role"] and host_info["local_cid"] == 2
    guest_present = {t["module"] for t in guest_info["transports"] if t["available"]}
    assert "vmw_vsock_virtio_transport" in guest_present
    assert guest_info["role"] == "guest" and guest_info["local_cid"] == 3
    assert guest_info["kernel"] != host_info["kernel"]  # the two generations, one each side


def test_ls_on_the_host_shows_the_guest_connection(nested_guest: NestedGuest) -> None:
    echo = socat_listener(nested_guest, 6006, "EXEC:cat")
    client = vsockctl("connect", f"{GUEST}:6006", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(b"ping\n")
        client.stdin.flush()
        assert client.stdout.readline() == b"ping\n"  # connected: the echo came back
        listed = run_vsockctl("ls", "--json")
    finally:
        stop_process(client)
        nested_guest.kill(echo)
    assert listed.returncode == 0, listed.stderr
    ours = [r for r in json_records(listed.stdout, "socket") if r["peer"] == f"{GUEST}:6006"]
    assert len(ours) == 1, listed.stdout
    assert ours[0]["state"] == "established"
    assert client.pid in {p["pid"] for p in ours[0]["processes"]}


# -- throughput ------------------------------------------------------------------------------


@pytest.mark.parametrize("server_side", ["guest", "host"])
@pytest.mark.parametrize("reverse", [False, True], ids=["client-sends", "server-sends"])
def test_throughput_between_host_and_guest(
    nested_guest: NestedGuest, nested_figures: list[str], server_side: str, reverse: bool
) -> None:
    port = "6100" if server_side == "guest" else "6101"
    client_args = ["--time", "3", "--port", port, "--json", *RETRY]
    client_args += ["-R"] if reverse else []
    rc: int | None
    if server_side == "guest":
        server = nested_guest.spawn("vsockctl", "throughput", "server", "--port", port, "--once")
        # Its start can outlast the client's retries at two levels of emulation.
        said = nested_guest.wait_for_output(server, "listening on", timeout=300)
        assert "listening on" in said.text, said.text
        try:
            done = run_vsockctl("throughput", "client", GUEST, *client_args, timeout=240)
        except subprocess.TimeoutExpired as exc:
            said = nested_guest.kill(server)
            pytest.fail(f"client stuck: {exc.stderr!r}; the guest's server said: {said.text}")
        if done.returncode != 0:
            nested_guest.kill(server)
            pytest.fail(f"client failed: {done.stderr!r}")
        served = finished(nested_guest, server)
        out, err, rc = done.stdout, done.stderr, done.returncode
        assert served.rc == 0, served.text
    else:
        with process(
            vsockctl_args("throughput", "server", "--port", port, "--once"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        ) as server_proc:
            client = nested_guest.spawn("vsockctl", "throughput", "client", "2", *client_args)
            got = nested_guest.wait(client, 240)
            if got.rc != 0:
                said = nested_guest.kill(client) if got.rc is None else got
                server_proc.kill()
                _, server_err = server_proc.communicate()
                pytest.fail(f"guest client: {said.rc} {said.text}; the server said: {server_err!r}")
            server_proc.wait(120)
        out, err, rc = got.stdout, got.stderr, got.rc
    assert rc == 0, err
    direction = json_record(out, "summary")["directions"][0]
    received = direction["receiver"]["bytes"]
    assert received == direction["sender"]["bytes"] > 0
    to = "guest" if (server_side == "guest") != reverse else "host"
    rate = direction["receiver"]["bits_per_second"] / 1e9
    nested_figures.append(
        f"throughput {'host' if to == 'guest' else 'guest'} -> {to} (server in the "
        f"{server_side}): {rate:.3f} Gbit/s, {received / 2**20:.1f} MiB in 3 s"
    )


def test_loopback_throughput_in_the_test_vm_for_comparison(nested_figures: list[str]) -> None:
    """The figure the host<->guest ones sit next to: CID 1 in the test VM, the same run."""
    done = run_vsockctl("--json", "bench", "--loopback", "--time", "3", timeout=180)
    assert done.returncode == 0, done.stderr
    direction = json_record(done.stdout, "summary")["directions"][0]
    received = direction["receiver"]["bytes"]
    assert received == direction["sender"]["bytes"] > 0
    rate = direction["receiver"]["bits_per_second"] / 1e9
    nested_figures.append(
        f"throughput over loopback in the test VM (CID 1): {rate:.3f} Gbit/s, "
        f"{received / 2**20:.1f} MiB in 3 s"
    )


# -- forward -----------------------------------------------------------------------------


def test_forward_a_host_tcp_port_to_a_guest_service(nested_guest: NestedGuest) -> None:
    """socat's most common job: a guest's vsock service as a TCP port on the host."""
    echo = socat_listener(nested_guest, 6030, "EXEC:cat")
    forward = ForwardProcess("tcp:127.0.0.1:0", f"vsock:{GUEST}:6030")
    try:
        port = int(forward.listening().rpartition(":")[2])
        data = pattern(256 << 10, seed=8)
        echoed = digest_through(lambda: socket.create_connection(("127.0.0.1", port), 120), data)
    finally:
        status, events, err = forward.stop()
        nested_guest.kill(echo)
    assert echoed == data
    assert status == ExitStatus.TERMINATED, err
    (closed,) = [r for r in events if r["event"] == "forward_closed"]
    assert closed["target"] == f"vsock:{GUEST}:6030" and closed["outcome"] == "done", closed
    assert closed["from_client_bytes"] == closed["to_client_bytes"] == len(data)
