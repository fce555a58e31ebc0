"""connect, listen, send, recv on the host: bad input, timeouts, help. No traffic.

Everything here only creates and binds sockets (allowed on the development
machines); the commands' traffic is tested in the VM tier.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import Invoke
from tests.records import json_records
from vsockctl.exit_status import ExitStatus


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["send", "--to", "3:", "--size", "1"], "no port after ':'"),
        (["send", "--to", "1:5", "--size", "12Q"], "size '12Q' is not understood"),
        (["send", "--cid", "1", "--size", "1"], "both --cid and --port"),
        (["send", "--to", "1:5", "--cid", "1", "--size", "1"], "not both"),
        (["send", "--to", "1:5", "--count", "3"], "--count needs --message-size"),
        (["send", "--to", "1:5", "--timeout", "soon", "--size", "1"], "duration 'soon'"),
        (["connect", "host:abc"], "port 'abc' is not a number"),
        (["connect", "--", "-1:5000"], "use 'any' for VMADDR_CID_ANY"),
        (["connect", "4294967296:1"], "larger than 4294967295"),
        (["connect"], "give CID:PORT"),
        (["connect", "--probe", "3:9-1"], "runs backwards"),
        (["connect", "--probe", "3"], "is not CID:PORTS"),
        (["listen"], "Missing option '--port'"),
        (["listen", "--port", "x"], "port 'x' is not a number"),
        (["recv", "--port", "1", "--expect-sha256", "abc"], "not a SHA-256 digest"),
        (["recv", "--port", "1", "--type", "bogus"], "'bogus' is not one of"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(invoke: Invoke, args: list[str], fragment: str) -> None:
    result = invoke(args)
    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_recv_gives_up_waiting_with_timed_out(invoke: Invoke) -> None:
    result = invoke(["recv", "--port", "any", "--timeout", "200ms", "-"])
    assert result.exit_code == ExitStatus.TIMED_OUT
    assert "listening on any:" in result.stderr
    assert "no peer connected within the timeout" in result.stderr
    assert result.stdout == ""


def test_recv_json_events_go_to_stderr_when_stdout_has_the_data(invoke: Invoke) -> None:
    result = invoke(["recv", "--port", "any", "--timeout", "0.1", "--json"])
    assert result.exit_code == ExitStatus.TIMED_OUT
    events = json_records(result.stderr)
    # the default 1 MiB vsock buffer, as the kernel took it, comes first
    assert [e["event"] for e in events] == ["sockopt", "sockopt", "listening", "error"]
    assert [(e["name"], e["effective"]) for e in events[:2]] == [
        ("buffer-max-size", 1 << 20),
        ("buffer-size", 1 << 20),
    ]
    assert events[3]["exit_name"] == "timed_out" and events[3]["operation"] == "accept"
    assert result.stdout == ""


def test_recv_json_events_go_to_stdout_when_data_go_to_a_file(invoke: Invoke) -> None:
    result = invoke(["recv", "--port", "any", "--timeout", "0.1", "--json", "/dev/null"])
    assert result.exit_code == ExitStatus.TIMED_OUT
    events = [json.loads(line)["event"] for line in result.stdout.splitlines()]
    assert events == ["sockopt", "sockopt", "listening", "error"]


def test_datagrams_are_refused_before_any_traffic(invoke: Invoke) -> None:
    # socket(AF_VSOCK, SOCK_DGRAM) fails with ENODEV without VMCI: nothing is sent.
    result = invoke(["recv", "--port", "any", "--type", "dgram", "--timeout", "0.1"])
    assert result.exit_code == ExitStatus.VSOCK_UNAVAILABLE
    assert "only VMware VMCI offers them" in result.stderr


def test_port_in_use_says_who_to_ask(invoke: Invoke) -> None:
    import socket

    from vsockctl.vsock.constants import AF_VSOCK

    with socket.socket(AF_VSOCK, socket.SOCK_STREAM) as holder:
        holder.bind((0xFFFFFFFF, 0xFFFFFFFF))
        port = holder.getsockname()[1]
        result = invoke(["recv", "--port", str(port), "--timeout", "0.1"])
    assert result.exit_code == ExitStatus.ERROR
    assert "EADDRINUSE" in result.stderr and "vsockctl ls" in result.stderr


@pytest.mark.parametrize("command", ["connect", "listen", "send", "recv", "info"])
def test_help_has_examples(invoke: Invoke, command: str) -> None:
    result = invoke([command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.stdout
    assert f"vsockctl {command}" in result.stdout
