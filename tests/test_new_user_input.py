"""A new user's input and the words they get back (issue 25): strict numbers, options
that cannot go together, info that says only what is true, completion, units.

Host tier; nothing connects to a CID (every command here fails before it would).
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Invoke
from vsockctl.bench.protocol import FrameKind, recv_frame
from vsockctl.cli.format import plural
from vsockctl.discover.kmod import ModuleState, load_hint, module_state
from vsockctl.discover.system import probe
from vsockctl.errors import ProtocolError, VsockError
from vsockctl.exit_status import ExitStatus
from vsockctl.forward.sides import TcpSide, UnixSide, VsockSide, connect_side, connect_timeout
from vsockctl.units import UnitError, parse_size
from vsockctl.vsock.address import AddressError, parse_address
from vsockctl.vsock.sockopts import format_value, json_value, lookup, parse_setting

# 8. Numbers are ASCII digits (or 0x hex): not what Python's int() also takes.


@pytest.mark.parametrize("text", ["1_0:5", "+3:5", "\u0663:5", "3:5_0", "3:+5", " 3 :\u0665"])
def test_lenient_numbers_are_not_addresses(text: str) -> None:
    with pytest.raises(AddressError, match="is not a number"):
        parse_address(text)


@pytest.mark.parametrize("text", ["1_0M", "\u0663K", "+1M"])
def test_lenient_numbers_are_not_sizes(text: str) -> None:
    with pytest.raises(UnitError):
        parse_size(text)


def test_what_stays_accepted() -> None:
    assert parse_address("0x10:5000").cid == 16
    assert parse_address(" 3 : 5000 ").port == 5000
    assert parse_setting("peer-host-vm-id=0x10").value == 16
    with pytest.raises(ValueError, match="takes a whole number"):
        parse_setting("peer-host-vm-id=1_0")


@pytest.mark.parametrize(
    "args",
    [
        ["connect", "1_0:5"],
        ["send", "--to", "+3:5", "--size", "1"],
        ["ls", "--pid", "+1"],
        ["ls", "--pid", "\u0663"],
        ["forward", "tcp:127.0.0.1:8_0", "vsock:3:80"],
        ["sockopt", "set", "peer-host-vm-id=+1"],
    ],
    ids=" ".join,
)
def test_lenient_numbers_on_the_command_line_exit_2(invoke: Invoke, args: list[str]) -> None:
    result = invoke(args)
    assert result.exit_code == ExitStatus.USAGE, result.output
    assert result.stderr.count("\n") == 1


# 9. Options that cannot mean anything together, and internal names that leaked.


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["listen", "--port", "1", "--once", "--max-clients", "4"], "give one"),
        (["listen", "--port", "1", "--exec", ""], "--exec needs a command"),
        (["listen", "--port", "1", "--exec", "cat", "-o", "f"], "-o would get nothing"),
        (["send", "--to", "1:5", "--pattern", "random"], "give --size"),
        (["forward", "tcp:127.0.0.1:8123", "vsock:any:80"], "'any' is for LISTEN"),
        (["forward", "tcp:127.0.0.1:8123", "vsock:3:any"], "'any' is for LISTEN"),
        (["connect", "--uds", "/nonexistent", "3:5"], "give only the port (5), not 3:5"),
        (["send", "--uds", "/nonexistent", "--to", "3:5", "--size", "1"], "not 3:5"),
        (["throughput", "client", "3", "--uds", "/nonexistent"], "drop '3'"),
        (["throughput", "server", "-R"], "--reverse goes on 'throughput client'"),
        (["throughput", "server", "--time", "5s"], "--time goes on 'throughput client'"),
        (["throughput", "client", "3", "--once"], "--once is for the server"),
        (["connect", "--concurrency", "4", "3:5"], "--concurrency is for --probe"),
        (["connect", "--retry-delay", "1s", "3:5"], "the pause between --retry attempts"),
        (
            ["send", "--to", "1:5", "--size", "1", "--message-size", "1", "--buf-size", "4K"],
            "--buf-size is for streams",
        ),
        (
            ["recv", "--port", "5", "--type", "seqpacket", "--buf-size", "4K"],
            "--buf-size is for streams",
        ),
        (["bench", "--loopback", "--port", "5"], "give no role, CID, --port or --uds"),
        (["bench", "--loopback", "--buf-size", "0"], "--buf-size must be from 1 byte"),
        (["bench", "--loopback", "--time", "0"], "--time must be more than 0"),
        (["bench", "--loopback", "--msg-size", "100M"], "--msg-size must be from 1 byte"),
    ],
)
def test_options_that_cannot_go_together_are_one_line_exit_2(
    invoke: Invoke, args: list[str], says: str
) -> None:
    result = invoke(args)
    assert result.exit_code == ExitStatus.USAGE, result.output
    assert says in result.stderr and result.stderr.count("\n") == 1
    assert "buf_size" not in result.stderr and "(0, 86400]" not in result.stderr


# 7, 14. Exit statuses and hints that fit what was addressed.


def test_a_tcp_or_unix_target_waits_as_its_kernel_does_and_vsock_5s() -> None:
    assert connect_timeout(TcpSide("127.0.0.1", 80), None) is None
    assert connect_timeout(UnixSide("/run/x"), None) is None
    assert connect_timeout(VsockSide.__new__(VsockSide), None) == 5.0
    assert connect_timeout(TcpSide("127.0.0.1", 80), 2.0) == 2.0


def test_a_refused_tcp_target_gets_a_tcp_meaning_not_a_vsock_one(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: refused
        with pytest.raises(VsockError) as info:
            connect_side(TcpSide("127.0.0.1", port), None, socket.socket)
    assert info.value.errno == errno.ECONNREFUSED
    assert info.value.meaning.cause == "nothing listens there"
    with pytest.raises(VsockError) as info:
        connect_side(UnixSide(str(tmp_path / "none")), None, socket.socket)
    assert info.value.meaning.cause == "there is no socket at that path"


# 10. info says only what is true of this kernel.


def modules_tree(root: Path, release: str, dep: str = "", builtin: str = "") -> Path:
    (root / release).mkdir(parents=True)
    (root / release / "modules.dep").write_text(dep)
    (root / release / "modules.builtin").write_text(builtin)
    return root


def test_a_module_is_loaded_built_in_loadable_absent_or_unknown(tmp_path: Path) -> None:
    sys_module = tmp_path / "sys"
    (sys_module / "vsock").mkdir(parents=True)
    lib = modules_tree(
        tmp_path / "lib",
        "6.1.0-test",
        dep="kernel/net/vmw_vsock/vsock_loopback.ko.xz: kernel/net/vmw_vsock/vsock.ko.xz\n",
        builtin="kernel/net/vmw_vsock/vsock_diag.ko\n",
    )

    def state(module: str, release: str = "6.1.0-test") -> ModuleState:
        return module_state(module, release, sys_module, lib)

    assert state("vsock") is ModuleState.LOADED
    assert state("vsock_diag") is ModuleState.BUILTIN
    assert state("vsock_loopback") is ModuleState.LOADABLE
    assert state("vhost_vsock") is ModuleState.ABSENT
    assert state("vsock_loopback", "7.0-elsewhere") is ModuleState.UNKNOWN
    assert (
        load_hint("vsock_loopback", ModuleState.LOADABLE) == "'modprobe vsock_loopback' (as root)"
    )
    assert "built without vhost_vsock" in load_hint("vhost_vsock", ModuleState.ABSENT, "6.1")
    assert "cannot be loaded here" in load_hint("x", ModuleState.UNKNOWN, "7.0")


def test_info_suggests_modprobe_only_where_modprobe_would_find_the_module(
    tmp_path: Path,
) -> None:
    from vsockctl.discover.system import ProbePaths, findings

    lib = modules_tree(tmp_path / "lib", "6.1.0-test", dep="kernel/x/vsock_diag.ko.xz:\n")
    paths = ProbePaths(sys=tmp_path / "sys", dev=tmp_path / "dev", modules=lib)
    notes = " ".join(findings(probe(paths, kernel="6.1.0-test")))
    assert "'modprobe vsock_diag'" in notes
    assert "built without vsock_loopback" in notes and "modprobe vsock_loopback" not in notes


@pytest.mark.skipif(os.geteuid() != 0, reason="CAP_BPF is root's here")
def test_sockmap_is_never_said_to_need_cap_bpf_when_it_has_it() -> None:
    (sockmap,) = [f for f in probe().features if f.name == "sockmap"]
    assert "CAP_BPF" not in sockmap.how, sockmap


# 12. Completion: NAME= waits for the value; option names complete for 'sockopt get'.


def complete(words: str, cword: int) -> list[str]:
    env = {**os.environ, "_VSOCKCTL_COMPLETE": "bash_complete", "COMP_WORDS": words}
    env["COMP_CWORD"] = str(cword)
    python = str(Path(__file__).parents[1] / ".venv/bin/python")
    result = subprocess.run(
        [python if os.path.exists(python) else "python3", "-m", "vsockctl"],
        capture_output=True,
        env=env,
        text=True,
        timeout=60,
    )
    return result.stdout.splitlines()


def test_sockopt_get_completes_option_names() -> None:
    assert complete("vsockctl sockopt get buffer-m", 3) == [
        "plain,buffer-min-size",
        "plain,buffer-max-size",
    ]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_leaves_no_space_after_name_equals(invoke: Invoke, tmp_path: Path) -> None:
    """bash itself runs the script: a 'nospace' completion asks 'compopt -o nospace'
    (compopt recorded by a stand-in: it works only inside real completion)."""
    script = tmp_path / "completion.bash"
    script.write_text(invoke(["completion", "bash"]).stdout)
    vsockctl = tmp_path / "vsockctl"  # answers as vsockctl would for --sockopt buffer-ma
    vsockctl.write_text("#!/bin/sh\necho nospace,buffer-max-size=\n")
    vsockctl.chmod(0o755)
    run = subprocess.run(
        [
            "bash",
            "-c",
            f'compopt() {{ echo compopt "$@"; }}; complete() {{ :; }}; source {script}; '
            f"PATH={tmp_path}:$PATH; COMP_WORDS=(vsockctl send --sockopt buffer-ma); "
            'COMP_CWORD=3; _vsockctl_completion vsockctl; echo "reply ${COMPREPLY[*]}"',
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.stdout.splitlines() == ["compopt -o nospace", "reply buffer-max-size="], run


# 13. Units and words as people read them.


def test_durations_never_show_an_exponent_and_are_ns_in_json() -> None:
    timeout = lookup("rcvtimeo")
    assert format_value(timeout, 360000000.0) == "360000000s"
    assert format_value(timeout, 1.5) == "1.5s"
    assert json_value(timeout, 1.5) == 1_500_000_000
    assert json_value(lookup("buffer-size"), 4096) == 4096


def test_plurals_and_articles() -> None:
    assert plural(1, "connection") == "1 connection" and plural(2, "client") == "2 clients"
    a, b = socket.socketpair()
    with a, b:
        from vsockctl.bench.protocol import send_frame

        send_frame(a, FrameKind.TEST, {})
        with pytest.raises(ProtocolError, match="expected an ACCEPT frame, got TEST"):
            recv_frame(b, FrameKind.ACCEPT)


# 11. Help and man pages say the same, and only what the command has.


@pytest.mark.parametrize("command", ["listen", "recv"])
def test_listeners_help_mentions_no_timeout_they_lack(invoke: Invoke, command: str) -> None:
    help_text = " ".join(invoke([command, "--help"]).stdout.split())
    assert "comes from --timeout" not in help_text


@pytest.mark.parametrize("command", ["throughput", "bench", "connect", "recv", "forward"])
def test_the_man_synopsis_is_the_help_usage_line(invoke: Invoke, command: str) -> None:
    usage = invoke([command, "--help"]).stdout.splitlines()[0]
    page = (Path(__file__).parents[1] / "man" / f"vsockctl-{command}.1").read_text()
    synopsis = page.split(".SH SYNOPSIS\n", 1)[1].splitlines()[0]
    plain = synopsis.replace("\\fB", "").replace("\\fR", "").replace("\\fI", "")
    assert usage == "Usage: " + plain.replace("\\-", "-")


def test_a_sockopt_the_kernel_clamped_is_said_without_v(invoke: Invoke) -> None:
    result = invoke(
        ["recv", "--port", "any", "--timeout", "0.1", "--sockopt", "buffer-size=64M", "-"]
    )
    assert result.exit_code == ExitStatus.TIMED_OUT
    (note,) = [line for line in result.stderr.splitlines() if "note:" in line]
    assert note.startswith("vsockctl: note: sockopt buffer-size=64M: the kernel made it ")
