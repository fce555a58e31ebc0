"""One event model: every --json record names its event and matches its declaration.

The whole suite runs with VSOCKCTL_CHECK_EVENTS=1 (tests/conftest.py), so any
record a test makes vsockctl print is checked as it goes out. Here the
validator itself is tested, the declarations against the commands, and each
command's JSON on the host tier (over Unix sockets where a peer is needed),
every line through the validator.
"""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal, TypedDict, cast, get_args

import pytest

from tests.conftest import Invoke
from tests.fake_vmm import FakeVmm, unix_guest
from tests.peers import recv_all, run_vsockctl
from tests.records import json_records
from vsockctl.cli import cli
from vsockctl.events import catalog as events
from vsockctl.events.record import Declared
from vsockctl.events.transfer import Exec

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vsk", dir="/tmp") as name:
        yield Path(name)


def test_the_validator_finds_what_is_wrong() -> None:
    good = {"event": "exec", "peer": "1:5", "returncode": 0}
    assert events.validate(good) == []
    assert events.validate({"event": "exec", "peer": "1:5"}) == ["exec lacks 'returncode'"]
    assert events.validate({**good, "rc": 1}) == ["exec has undeclared 'rc'"]
    assert events.validate({"peer": "1:5"}) == ["unknown event None"]
    assert events.validate([1]) == ["a record is not a JSON object"]
    assert events.validate({**good, "returncode": "0"}) == [
        "exec.returncode is str '0', not <class 'int'>"
    ]
    assert events.validate({**good, "returncode": True}) != []  # a JSON true is no number
    summary: dict[str, object] = {"event": "summary", "complete": True, "test": {}}
    summary.update(directions=[], cpu={}, buffers={}, intervals=[], server_intervals=[], errors=[])
    # every top-level key is there; the nested check looks inside "test"
    assert any("summary.test lacks" in p for p in events.validate(summary))
    closed = {"event": "forward_closed", "peer": "p", "target": "t", "from_client_bytes": 0}
    closed.update(to_client_bytes=0, elapsed_ns=1, outcome="done", error=None)
    assert events.validate(closed) == []
    assert events.validate({**closed, "outcome": "lost"}) != []  # not an Outcome


@pytest.mark.parametrize("declared", events.EVENTS, ids=lambda d: d.name)
def test_every_record_follows_the_vocabulary(declared: Declared) -> None:
    assert events.vocabulary_problems(declared) == []
    silent = [key.name for _, key in events.every_key(declared.shape) if not key.meaning]
    assert silent == ["event"]  # every other key says what it holds


def test_the_vocabulary_check_finds_a_departure() -> None:
    old = {
        "event": Literal["old"],
        "why": Annotated[str, "the reason"],
        "wait_seconds": Annotated[float, "how long"],
        "error": Annotated[int, "a number"],
    }
    Old = TypedDict("Old", old)  # type: ignore[misc]  # a record made at run time

    found = events.vocabulary_problems(Declared(Old, ("send",), "an old record"))
    assert found == [
        "Old.why: say 'error'",
        "Old.wait_seconds: durations are *_ns",
        "Old.error: a line of text",
    ]


COMMANDS = sorted(set(cli.load_all()) - {"bench"})  # bench is throughput's other name


@pytest.mark.parametrize("declared", events.EVENTS, ids=lambda d: d.name)
def test_declarations_name_real_commands(declared: Declared) -> None:
    assert set(declared.commands) - {"*"} <= set(COMMANDS)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "completion"])
def test_every_command_declares_its_records(command: str) -> None:
    assert [e for e in events.for_command(command) if "*" not in e.commands]


def test_an_undeclared_record_is_refused_while_checking(invoke: Invoke) -> None:
    from vsockctl.cli.env import Env

    with pytest.raises(events.UndeclaredRecord, match="undeclared 'surprise'"):
        record = {"event": "exec", "peer": "x", "returncode": 0, "surprise": 1}
        Env(json=True).emit(cast(Exec, record))


HOST_SAFE_RUNS = {  # each command's run and the records it must print
    "info": (["info", "--json"], {"info"}),
    "ls": (["ls", "--json"], {"error"}),  # no vsock_diag here: the error record
    "sockopt list": (["sockopt", "list", "--json"], {"sockopt_option"}),
    "sockopt get": (["sockopt", "get", "--json", "buffer-size", "trusted"], {"sockopt_value"}),
    "sockopt set": (
        ["sockopt", "set", "--json", "buffer-max-size=1M", "buffer-size=1M"],
        {"sockopt"},
    ),
    "recv": (
        ["recv", "--json", "--port", "any", "--timeout", "0.1", "/dev/null"],
        {"listening", "error"},
    ),
}


@pytest.mark.parametrize("run", sorted(HOST_SAFE_RUNS))
def test_every_host_safe_command_prints_declared_records(invoke: Invoke, run: str) -> None:
    args, expected = HOST_SAFE_RUNS[run]
    result = invoke(args)
    got = json_records(result.stdout) + json_records(result.stderr)  # each one validated
    assert expected <= {str(record["event"]) for record in got}


def test_transfers_through_a_vmm_print_declared_records(short_dir: Path, tmp_path: Path) -> None:
    """send, connect --probe and a listener over hybrid vsock (Unix sockets, no CID)."""
    guest = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    guest.bind(str(short_dir / "guest_7100"))
    guest.listen(4)

    def serve() -> None:  # the guest's service: read each connection to its end
        while True:
            try:
                conn, _ = guest.accept()
            except OSError:
                return
            with conn:
                recv_all(conn)

    threading.Thread(target=serve, daemon=True).start()
    uds = str(short_dir / "v.sock")
    with guest, FakeVmm(short_dir / "v.sock", unix_guest(short_dir)):
        probe = run_vsockctl("--json", "connect", "--probe", "--uds", uds, "7100,7101")
        sent = run_vsockctl("--json", "send", "--uds", uds, "--port", "7100", "--size", "1M")
    for result in (probe, sent):
        for record in json_records(result.stdout.decode()) + json_records(result.stderr.decode()):
            assert events.validate(record) == [], record
    assert {r["event"] for r in json_records(sent.stdout.decode())} >= {"connected", "stats"}
    assert [r["open"] for r in json_records(probe.stdout.decode()) if r["event"] == "probe"] == [
        True,
        False,
    ]


def test_the_record_union_is_every_declared_record() -> None:
    """``Record`` (what Env.emit takes) is written out for mypy; it must list the
    same records as ``EVENTS``, or a new record could be printed unchecked."""
    assert set(get_args(events.Record)) == {declared.shape for declared in events.EVENTS}
    assert len(events.BY_NAME) == len(events.EVENTS)  # no two records share an event name
