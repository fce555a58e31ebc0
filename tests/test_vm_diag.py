"""ls and sockopt over real vsock (CID 1): sockets of socat, ncat and our own, seen by sock_diag."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest
from click.testing import CliRunner, Result

from tests.peers import LOCAL, free_port, process, run_vsockctl
from tests.records import json_records
from vsockctl.cli import cli
from vsockctl.cli.env import Env
from vsockctl.discover.diag import dump
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.sockets import SocketType, accept, connect, listen
from vsockctl.vsock.sockopts import OPTIONS

pytestmark = [pytest.mark.vsock, pytest.mark.kernel_features, pytest.mark.timeout(120)]

Record = dict[str, Any]


def in_process(*args: str) -> Result:
    """vsockctl ARGS run in this process (a new interpreter costs seconds under TCG)."""
    return CliRunner().invoke(cli, list(args), obj=Env(), catch_exceptions=False)


def ls(*args: str) -> list[Record]:
    result = in_process("--json", "ls", *args)
    assert result.exit_code == 0, result.stderr
    return json_records(result.stdout)


def wait_for(check: Callable[[], list[Record]], deadline: float = 20.0) -> list[Record]:
    """``check()`` once it returns something (a peer process is starting up)."""
    end = time.monotonic() + deadline
    while True:
        found = check()
        if found or time.monotonic() > end:
            return found
        time.sleep(0.1)


def names(record: Record) -> set[str]:
    return {p["name"] for p in record["processes"]}


def test_socat_listener_appears_with_its_process() -> None:
    port = free_port()
    with process(["socat", f"VSOCK-LISTEN:{port}", "-"], stdin=subprocess.PIPE) as socat:
        found = wait_for(lambda: ls("--listening", "--port", str(port)))
        assert len(found) == 1, found
        (record,) = found
        assert record["type"] == "stream" and record["state"] == "listen"
        assert record["local_port"] == port and record["shutdown"] == "-"
        assert record["processes"] == [{"pid": socat.pid, "name": "socat"}]


def test_ncat_connection_appears_on_both_ends() -> None:
    port = str(free_port())
    with (
        process(["ncat", "--vsock", "-l", "-p", port], stdin=subprocess.PIPE) as server,
        process(["ncat", "--vsock", "1", port], stdin=subprocess.PIPE) as client,
    ):

        def established() -> list[Record]:
            records = [r for r in ls("--port", port) if r["state"] == "established"]
            return records if len(records) == 2 else []

        records = wait_for(established)
        assert len(records) == 2, ls("--port", port)
        by_pid = {p["pid"]: r for r in records for p in r["processes"]}
        accepted, connecting = by_pid[server.pid], by_pid[client.pid]
        assert accepted["local_port"] == int(port) and accepted["peer_cid"] == LOCAL
        assert connecting["peer_port"] == int(port) and connecting["peer_cid"] == LOCAL
        assert accepted["peer_port"] == connecting["local_port"]
        assert names(accepted) == names(connecting) == {"ncat"}
        assert all(r["type"] == "stream" for r in records)


def test_our_seqpacket_pair_is_named_seqpacket_with_our_pid() -> None:
    with listen(VsockAddress(LOCAL, 0xFFFFFFFF), SocketType.SEQPACKET) as server:
        port = server.getsockname()[1]
        with connect(VsockAddress(LOCAL, port), SocketType.SEQPACKET) as client:
            conn, _ = accept(server)
            with conn:
                client.shutdown(1)  # SHUT_WR: shows as "wr" on our side
                time.sleep(0.2)
                records = ls("--type", "seqpacket", "--pid", str(os.getpid()))
    assert sorted(r["state"] for r in records) == ["established", "established", "listen"]
    assert all(r["type"] == "seqpacket" for r in records)
    me = psutil.Process().name()
    assert all(names(r) == {me} for r in records)
    # sock_diag reports a socket's own shutdown, not its peer's.
    (ours,) = [r for r in records if r["peer_port"] == port]
    assert ours["shutdown"] == "wr"
    (theirs,) = [r for r in records if r["state"] == "established" and r["local_port"] == port]
    assert theirs["shutdown"] == "-"


def test_ls_table_and_filters() -> None:
    with listen(VsockAddress(LOCAL, 0xFFFFFFFF)) as server:
        port = server.getsockname()[1]
        table = in_process("ls", "--listening")
        assert table.exit_code == 0
        line = next(x for x in table.stdout.splitlines() if f":{port} " in x + " ")
        assert line.split()[:2] == ["stream", "listen"]
        assert ls("--port", str(port), "--type", "seqpacket") == []
        assert ls("--cid", "12345") == []
        assert any(r["local_port"] == port for r in ls("--cid", "any"))
    assert not [s for s in dump() if s.local.port == port]


@pytest.mark.parametrize("sock_type", ["stream", "seqpacket"])
def test_sockopt_set_reads_back(sock_type: str) -> None:
    result = in_process(
        "--json", "sockopt", "set", "-t", sock_type, "buffer-max-size=2M", "buffer-size=1M"
    )
    assert result.exit_code == 0, result.stderr
    records = {r["name"]: r for r in json_records(result.stdout)}
    assert records["buffer-size"]["effective"] == 1048576
    assert not records["buffer-size"]["changed"]


def test_sockopt_set_reports_clamping() -> None:
    clamped = in_process("--json", "sockopt", "set", "buffer-size=1M")
    (record,) = json_records(clamped.stdout)
    assert record["changed"] and record["effective"] == 262144 and "clamped" in record["note"]


@pytest.mark.parametrize("sock_type", ["stream", "seqpacket"])
def test_every_listed_option_reads_or_reports_its_errno(sock_type: str) -> None:
    result = in_process("--json", "sockopt", "list", "-t", sock_type)
    assert result.exit_code == 0, result.stderr
    records = json_records(result.stdout)
    assert [r["name"] for r in records] == [opt.name for opt in OPTIONS]
    for record in records:
        assert record["available"] or record["errno_name"] == "ENOPROTOOPT", record


def test_sockopt_on_send_and_recv_reach_the_connection() -> None:
    port = str(free_port())
    opts = ("--sockopt", "buffer-max-size=1M", "--sockopt", "buffer-size=1M", "-v")
    with process(
        [
            sys.executable,
            "-m",
            "vsockctl",
            "recv",
            "--port",
            port,
            "--expect-bytes",
            "8M",
            *opts,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as receiver:
        sent = run_vsockctl(
            "send",
            "--to",
            f"1:{port}",
            "--size",
            "8M",
            "--retry",
            "100",
            "--retry-delay",
            "50ms",
            *opts,
        )
        _, recv_err = receiver.communicate(timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert receiver.returncode == 0, recv_err
    expected = b"sockopt buffer-size: requested 1M, effective 1048576 (1M)"
    assert expected in sent.stderr and expected in recv_err
