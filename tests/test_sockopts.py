"""Socket options on real AF_VSOCK sockets of this machine (created, never connected)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest

from tests.conftest import Invoke
from tests.records import json_records
from vsockctl.errors import VsockError
from vsockctl.exit_status import ExitStatus
from vsockctl.vsock.constants import AF_VSOCK
from vsockctl.vsock.sockopt_apply import Applied, apply, configured, get_option, order, set_option
from vsockctl.vsock.sockopts import OPTIONS, CType, SockOptError, lookup, parse_setting


@pytest.fixture
def vsock() -> Iterator[socket.socket]:
    with socket.socket(AF_VSOCK, socket.SOCK_STREAM) as sock:
        yield sock


@pytest.mark.parametrize(
    "spelling",
    [
        "buffer-size",
        "BUFFER-SIZE",
        "SO_VM_SOCKETS_BUFFER_SIZE",
        "so_vm_sockets_buffer_size",
        "SO_VMCI_BUFFER_SIZE",
        "vmci-buffer-size",
        "vmci_buffer_size",
        " buffer_size ",
    ],
)
def test_every_spelling_finds_the_option(spelling: str) -> None:
    assert lookup(spelling).name == "buffer-size"


def test_each_spelling_names_one_option_only() -> None:
    names = [name for opt in OPTIONS for name in set(opt.names)]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("bogus=1", "unknown socket option 'bogus'"),
        ("buffer-size", "expected NAME=VALUE"),
        ("buffer-size=", "expected NAME=VALUE"),
        ("buffer-size=12Q", "size '12Q' is not understood"),
        ("connect-timeout=soon", "duration 'soon'"),
        ("zerocopy=maybe", "takes on or off"),
        ("rcvlowat=4G", "does not fit its C type (int)"),
        ("buffer-size=16777216T", "does not fit its C type (u64)"),
    ],
)
def test_bad_settings_say_what_is_accepted(text: str, fragment: str) -> None:
    with pytest.raises(SockOptError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_setting(text)


def test_values_take_units() -> None:
    assert parse_setting("buffer-size=64K").value == 65536
    assert parse_setting("buffer-max-size=1.5M").value == 1572864
    assert parse_setting("connect-timeout=500ms").value == pytest.approx(0.5)
    assert parse_setting("zerocopy=on").value == 1
    assert parse_setting("SO_ZEROCOPY=false").value == 0


def test_c_widths_match_the_kernel_headers() -> None:
    assert lookup("buffer-size").ctype is CType.U64 and CType.U64.width == 8
    assert lookup("connect-timeout").ctype is CType.TIMEVAL and CType.TIMEVAL.width == 16
    assert lookup("rcvlowat").ctype is CType.INT and CType.INT.width == 4
    assert CType.TIMEVAL.pack(2.25) == (2).to_bytes(8, "little") + (250000).to_bytes(8, "little")
    assert CType.TIMEVAL.unpack(CType.TIMEVAL.pack(0.5)) == 0.5


def test_limits_go_before_the_size() -> None:
    settings = [parse_setting(t) for t in ("buffer-size=1M", "rcvlowat=1", "buffer-max-size=2M")]
    assert [s.option.name for s in order(settings)] == [
        "buffer-max-size",
        "buffer-size",
        "rcvlowat",
    ]


def test_default_buffer_sizes_read_with_eight_bytes(vsock: socket.socket) -> None:
    assert get_option(vsock, lookup("buffer-size")) == 262144
    assert get_option(vsock, lookup("buffer-min-size")) == 128
    assert get_option(vsock, lookup("buffer-max-size")) == 262144
    assert get_option(vsock, lookup("connect-timeout")) == 2.0


def test_raising_the_maximum_first_lets_the_size_through(vsock: socket.socket) -> None:
    applied = apply(vsock, [parse_setting("buffer-size=1M"), parse_setting("buffer-max-size=2M")])
    by_name = {a.setting.option.name: a for a in applied}
    assert by_name["buffer-size"].effective == 1048576 and not by_name["buffer-size"].changed
    assert get_option(vsock, lookup("buffer-max-size")) == 2 * 1048576


def test_a_clamped_size_is_reported_as_clamped(vsock: socket.socket) -> None:
    (applied,) = apply(vsock, [parse_setting("buffer-size=1M")])
    assert applied.changed and applied.effective == 262144
    assert applied.note is not None and "clamped" in applied.note


def test_every_option_reads_or_gives_its_documented_errno(vsock: socket.socket) -> None:
    for opt in OPTIONS:
        if opt.linux_errno is None:
            get_option(vsock, opt)
        else:
            with pytest.raises(VsockError) as info:
                get_option(vsock, opt)
            assert info.value.errno == opt.linux_errno, opt.name


def test_a_refused_value_keeps_its_errno_meaning(vsock: socket.socket) -> None:
    with pytest.raises(VsockError) as info:
        set_option(vsock, lookup("rcvlowat"), 1 << 30)  # above the buffer
    assert info.value.errno == errno.EINVAL
    assert "refused this value" in info.value.meaning.cause
    (applied,) = apply(vsock, [parse_setting("trusted=1")], strict=False)
    assert applied.error is not None and applied.error.meaning.name == "ENOPROTOOPT"


def test_configured_factory_applies_and_reports_once() -> None:
    reports: list[list[Applied]] = []
    make = configured(socket.socket, [parse_setting("buffer-max-size=1M")], reports.append)
    for _ in range(3):
        with make(AF_VSOCK, socket.SOCK_STREAM) as sock:
            assert get_option(sock, lookup("buffer-max-size")) == 1048576
    assert len(reports) == 1


def test_sockopt_set_shows_requested_and_effective(invoke: Invoke) -> None:
    result = invoke(["--json", "sockopt", "set", "buffer-size=1M", "SO_VMCI_BUFFER_MAX_SIZE=2M"])
    assert result.exit_code == 0, result.output
    records = {r["name"]: r for r in json_records(result.stdout)}
    assert records["buffer-size"]["effective"] == 1048576
    assert records["buffer-max-size"]["effective"] == 2097152
    clamped = invoke(["sockopt", "set", "buffer-size=1M"])
    assert clamped.exit_code == 0
    assert "clamped into [buffer-min-size, buffer-max-size]" in clamped.stdout


def test_sockopt_get_unhandled_option_exits_1_with_meaning(invoke: Invoke) -> None:
    result = invoke(["sockopt", "get", "buffer-size", "trusted"])
    assert result.exit_code == ExitStatus.ERROR
    assert "262144" in result.stdout
    assert "ENOPROTOOPT: this kernel does not handle that option" in result.stdout


def test_sockopt_list_json_covers_every_option(invoke: Invoke) -> None:
    result = invoke(["sockopt", "list", "--json"])
    assert result.exit_code == 0
    records = json_records(result.stdout)
    assert [r["name"] for r in records] == [opt.name for opt in OPTIONS]
    for record, opt in zip(records, OPTIONS, strict=True):
        assert record["available"] is (opt.linux_errno is None)
        assert record["width"] == opt.ctype.width


@pytest.mark.parametrize(
    "args",
    [
        ["sockopt", "set", "bogus=1"],
        ["sockopt", "get", "bogus"],
        ["recv", "--port", "any", "--sockopt", "buffer-size=12Q"],
        ["send", "--to", "1:5000", "--size", "1", "--sockopt", "nonsense"],
    ],
)
def test_bad_sockopt_input_is_one_line_and_exit_2(invoke: Invoke, args: list[str]) -> None:
    result = invoke(args)
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_sockopt_on_a_listener_shows_effective_values_with_v(invoke: Invoke) -> None:
    # Binding and listening are allowed here; nothing connects, so recv times out.
    args = ["recv", "--port", "any", "--timeout", "50ms", "-v", "--sockopt", "buffer-size=2M"]
    result = invoke(args)
    assert result.exit_code == ExitStatus.TIMED_OUT
    # recv's default buffer-max-size (1M) stays, and clamps the size asked for
    assert "sockopt buffer-max-size: requested 1M, effective 1048576 (1M)\n" in result.stderr
    assert "sockopt buffer-size: requested 2M, effective 1048576 (1M) (clamped" in result.stderr
    as_json = invoke(["--json", *args[:-3], "--sockopt", "buffer-max-size=1M"])
    # recv's stdout carries data, so its events go to stderr.
    events = json_records(as_json.stderr)
    assert {"event": "sockopt", "name": "buffer-max-size"}.items() <= events[0].items()
    assert events[0]["effective"] == 1048576
