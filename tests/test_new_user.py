"""What a new user runs into (issue 25): files kept, no tracebacks, quiet pipes, errors
that match the docs, options that cannot go together.

Host tier: nothing here connects to a CID. Commands fail before connecting, only
bind and listen, or go through Unix sockets (a hybrid vsock socket played by the
fake VMM). The cases that need vsock traffic are in test_vm_new_user.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Invoke
from tests.peers import read_until_listening, run_vsockctl, vsockctl, vsockctl_args
from tests.records import json_records
from tests.test_tables import on_terminal
from vsockctl.exit_status import ExitStatus
from vsockctl.vsock.constants import AF_VSOCK, VMADDR_CID_ANY

KEPT = b"precious bytes, not to be lost\n"


@pytest.fixture
def bound_port() -> Iterator[int]:
    """A vsock port this test holds (bound and listening: nothing connects)."""
    with socket.socket(AF_VSOCK, socket.SOCK_STREAM) as sock:
        sock.bind((VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def kept(tmp_path: Path) -> Path:
    path = tmp_path / "kept.bin"
    path.write_bytes(KEPT)
    return path


# 1. A failed command leaves an existing output file as it was, and creates none.


@pytest.mark.parametrize("command", [["recv", "FILE"], ["listen", "-o", "FILE"]])
def test_a_failed_bind_keeps_the_file(
    bound_port: int, kept: Path, tmp_path: Path, command: list[str]
) -> None:
    for path in (kept, tmp_path / "new.bin"):
        args = [str(path) if a == "FILE" else a for a in command]
        result = run_vsockctl(*args, "--port", str(bound_port), stdin=subprocess.DEVNULL)
        assert result.returncode == ExitStatus.ERROR, result.stderr
        assert b"(EADDRINUSE)" in result.stderr
    assert kept.read_bytes() == KEPT
    assert not (tmp_path / "new.bin").exists()


def test_a_timeout_before_any_sender_keeps_the_file(kept: Path, tmp_path: Path) -> None:
    for path, timeout in ((kept, "0.2"), (kept, "0"), (tmp_path / "new.bin", "0.2")):
        result = run_vsockctl("recv", "--port", "any", "--timeout", timeout, str(path))
        assert result.returncode == ExitStatus.TIMED_OUT, result.stderr  # 0 too: no EAGAIN
        assert b"no peer connected within the timeout" in result.stderr
    assert kept.read_bytes() == KEPT
    assert not (tmp_path / "new.bin").exists()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("command", [["recv", "FILE"], ["listen", "-o", "FILE"]])
def test_ctrl_c_before_any_sender_keeps_the_file(
    kept: Path, command: list[str], stop: signal.Signals
) -> None:
    args = [str(kept) if a == "FILE" else a for a in command]
    proc = vsockctl(
        "--json", *args, "--port", "any",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    read_until_listening(proc.stdout)  # bound, listening, nobody came
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + stop, err
    assert kept.read_bytes() == KEPT


def test_an_output_file_is_not_required_to_be_readable() -> None:
    """Mode 200 was refused with 'is not readable'. Run as nobody where root would
    pass any check; the file must only be writable."""
    directory = Path(tempfile.mkdtemp(prefix="vsockctl-w-only-"))  # nobody can reach it
    directory.chmod(0o755)
    target = directory / "w-only"
    target.write_bytes(KEPT)
    target.chmod(0o200)
    prefix: list[str] = []
    if os.geteuid() == 0:
        os.chown(target, 65534, 65534)
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    args = [*prefix, *vsockctl_args("recv", "--port", "any", "--timeout", "0.1", str(target))]
    result = subprocess.run(args, capture_output=True, timeout=60)
    assert result.returncode == ExitStatus.TIMED_OUT, result.stderr
    assert b"not readable" not in result.stderr
    target.chmod(0o600)
    assert target.read_bytes() == KEPT
    shutil.rmtree(directory)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["recv", "--port", "any", "DIR"], "writing DIR failed: Is a directory"),
        (["listen", "--port", "any", "-o", "DIR"], "writing DIR failed: Is a directory"),
        (["send", "--uds", "SOCK", "--port", "5", "MISSING"], "reading MISSING failed: No such"),
        (["send", "--uds", "SOCK", "--port", "5", "DIR"], "reading DIR failed: Is a directory"),
    ],
)
def test_a_bad_local_file_is_exit_1_as_the_table_says(
    invoke: Invoke, tmp_path: Path, args: list[str], says: str
) -> None:
    names = {"DIR": str(tmp_path), "MISSING": str(tmp_path / "missing"), "SOCK": "/nonexistent"}
    result = invoke([names.get(a, a) for a in args])
    assert result.exit_code == ExitStatus.ERROR, result.output
    for name, path in names.items():
        says = says.replace(name, path)
    assert result.stderr.startswith(f"vsockctl: {says}"), result.stderr
    assert result.stderr.count("\n") == 1


# 2, 3. Closed, full and abandoned standard streams: one line or silence, never a traceback.

SAFE_COMMANDS = [  # they run to the end here without connecting anywhere
    ["info"],
    ["--json", "info"],
    # not vms: other tests' processes come and go as VMs it would find
    ["ls"],
    ["sockopt", "list"],
    ["--json", "sockopt", "list"],
    ["sockopt", "get", "buffer-size", "connect-timeout"],
    ["sockopt", "set", "buffer-size=64K"],
    ["completion", "bash"],
    ["--version"],
    ["--help"],
    *[[name, "--help"] for name in ("connect", "forward", "listen", "recv", "send", "throughput")],
]


def _run(
    args: list[str], setup: Callable[[], None] | None = None, **kwargs: Any
) -> tuple[int, str]:
    proc = subprocess.run(
        vsockctl_args(*args), stderr=subprocess.PIPE, preexec_fn=setup, timeout=60, **kwargs
    )
    return proc.returncode, proc.stderr.decode()


@pytest.fixture(scope="module")
def normal_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, bytes]]:
    """Each safe command's status, stderr and stdout with its streams as they should be."""
    runs = {}
    out = tmp_path_factory.mktemp("out") / "stdout"
    for args in SAFE_COMMANDS:
        with out.open("wb") as stdout:
            status, err = _run(args, stdin=subprocess.DEVNULL, stdout=stdout)
        runs[" ".join(args)] = (status, err, out.read_bytes())
    return runs


@pytest.mark.parametrize("args", SAFE_COMMANDS, ids=" ".join)
def test_closed_stdin_changes_nothing(
    args: list[str], normal_runs: dict[str, tuple[int, str, bytes]]
) -> None:
    status, err = _run(args, setup=lambda: os.close(0), stdout=subprocess.DEVNULL)
    assert (status, err) == normal_runs[" ".join(args)][:2]


@pytest.mark.parametrize("args", SAFE_COMMANDS, ids=" ".join)
def test_closed_stdout_is_one_line_and_exit_1(
    args: list[str], normal_runs: dict[str, tuple[int, str, bytes]]
) -> None:
    normal_status, normal_err, normal_out = normal_runs[" ".join(args)]
    status, err = _run(args, setup=lambda: os.close(1), stdin=subprocess.DEVNULL)
    assert "Traceback" not in err
    if not normal_out:
        assert (status, err) == (normal_status, normal_err)
        return
    assert status == ExitStatus.ERROR, err
    assert err.endswith("vsockctl: writing stdout failed: stdout is closed (<&- or >&-)\n")


@pytest.mark.parametrize("args", SAFE_COMMANDS, ids=" ".join)
def test_a_full_stdout_is_one_line_and_exit_1(
    args: list[str], normal_runs: dict[str, tuple[int, str, bytes]]
) -> None:
    normal_status, normal_err, normal_out = normal_runs[" ".join(args)]
    with open("/dev/full", "wb") as full:
        status, err = _run(args, stdin=subprocess.DEVNULL, stdout=full)
    assert "Traceback" not in err
    if not normal_out:
        assert (status, err) == (normal_status, normal_err)
        return
    assert status == ExitStatus.ERROR, err
    assert err.endswith("vsockctl: writing stdout failed: No space left on device\n"), err
    assert err.count("vsockctl:") == 1


@pytest.mark.parametrize("args", SAFE_COMMANDS, ids=" ".join)
def test_a_reader_that_went_away_ends_it_quietly_with_141(
    args: list[str], normal_runs: dict[str, tuple[int, str, bytes]]
) -> None:
    """As 'vsockctl ... | head -1' once head has its line: the pipe's reader is gone
    before vsockctl writes."""
    normal_status, normal_err, normal_out = normal_runs[" ".join(args)]
    read, write = os.pipe()
    os.close(read)
    try:
        status, err = _run(args, stdin=subprocess.DEVNULL, stdout=write)
    finally:
        os.close(write)
    if not normal_out:
        assert (status, err) == (normal_status, normal_err)
        return
    assert status == ExitStatus.PIPE_CLOSED, err
    assert err == normal_err  # no "Broken pipe", no traceback: what it says anyway


# 4. Stats that the error's hint points at.


@pytest.mark.parametrize("command", ["send", "connect"])
def test_the_stats_its_error_points_at_are_printed(tmp_path: Path, command: str) -> None:
    """The receiver takes the connection and goes away: EPIPE or a reset, and the
    partial stats line above the error, which says 'the stats above'. The receiver
    is a hybrid socket that answers OK, reads a little and closes."""
    path = tmp_path / "v.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)

        def vanish() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(64)  # CONNECT 5
                conn.sendall(b"OK 1073741824\n")
                conn.recv(4096)  # the first bytes, then gone

        thread = threading.Thread(target=vanish, daemon=True)
        thread.start()
        if command == "send":
            result = run_vsockctl("send", "--uds", str(path), "--port", "5", "--size", "64M")
        else:  # connect relays stdin: 64 MiB of it
            result = run_vsockctl("connect", "--uds", str(path), "5", input=bytes(64 << 20))
        thread.join(10)
    err = result.stderr.decode()
    assert result.returncode == ExitStatus.CONNECTION_LOST, err
    stats, error = err.splitlines()[-2:]
    assert stats.startswith("partial: sent "), err
    assert "the stats above say what got through" in error
    assert "Traceback" not in err


# 5. --json error records for usage errors; 11. help where help is asked for.


@pytest.mark.parametrize(
    "args",
    [["--json", "connect", "3:"], ["--json", "bogus"], ["connect", "--json", "3:"]],
    ids=" ".join,
)
def test_json_usage_errors_end_with_an_error_record(invoke: Invoke, args: list[str]) -> None:
    result = invoke(args)
    assert result.exit_code == ExitStatus.USAGE
    (record,) = json_records(result.stdout)
    assert record["event"] == "error" and record["exit_status"] == 2
    assert record["exit_name"] == "usage"
    assert result.stderr == f"vsockctl: {record['error']}\n"


def test_bare_vsockctl_prints_its_help_not_an_error(invoke: Invoke) -> None:
    result = invoke([])
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: vsockctl") and result.stderr == ""


def test_completion_without_a_shell_takes_shells_or_says_which(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHELL", "/usr/bin/zsh")
    assert invoke(["completion"]).stdout.startswith("#compdef vsockctl")
    monkeypatch.setenv("SHELL", "/bin/dash")
    result = invoke(["completion"])
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr.startswith("vsockctl: name the shell: bash, zsh, fish (see")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "args", [["info", "-V"], ["vms", "-V"], ["sockopt", "--json", "list"], ["ls", "-V"]]
)
def test_global_options_work_after_the_command_name(invoke: Invoke, args: list[str]) -> None:
    result = invoke(args)
    assert result.exit_code == 0, result.output
    if "-V" in args:
        assert result.stdout.startswith("vsockctl, version ")
    else:
        assert json_records(result.stdout)[0]["event"] == "sockopt_option"


# 13. The progress bar's rate is in the stats line's units (MiB/s, not rich's MB/s).


def test_the_progress_bar_speaks_the_stats_lines_units(tmp_path: Path) -> None:
    path = tmp_path / "sink.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)

        def sink() -> None:  # a hybrid socket that answers OK and reads everything
            conn, _ = server.accept()
            with conn:
                conn.recv(64)
                conn.sendall(b"OK 1073741824\n")
                while conn.recv(1 << 20):
                    pass

        thread = threading.Thread(target=sink, daemon=True)
        thread.start()
        args = ["send", "--uds", str(path), "--port", "5", "--size", "2G"]
        text = "\n".join(on_terminal(args, 100, stderr=True))
        thread.join(30)
    rates = re.findall(r"\d+(?:\.\d+)? ([KMGT]i?B)/s", text)
    assert rates and all("i" in unit for unit in rates), text
