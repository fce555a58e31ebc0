"""The vsock sysctls, read from a /proc tree written as Linux 7.2 lays it out.

The real files are read in the Linux 7 boot (tests/test_vm_netns.py); here a
/proc tree in a temporary directory stands for kernels this machine is not:
one before Linux 7 (no directory), one with a sysctl vsockctl does not know.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tests.fakes import empty_machine
from vsockctl.cli.errors import describe
from vsockctl.discover.sysctl import local_namespace_hint, namespace_mode, read_sysctls
from vsockctl.discover.system import probe, to_record
from vsockctl.errors import Operation, VsockError
from vsockctl.vsock.address import VsockAddress


def linux7_proc(root: Path, **values: str) -> Path:
    proc = root / "proc"
    directory = proc / "sys/net/vsock"
    directory.mkdir(parents=True)
    for name, value in values.items():
        (directory / name).write_text(value + "\n")
    return proc


def test_every_file_is_reported_known_ones_first_and_explained(tmp_path: Path) -> None:
    proc = linux7_proc(
        tmp_path, zz_new_knob="3", g2h_fallback="0", ns_mode="local", child_ns_mode="local"
    )
    found = read_sysctls(proc)
    assert [(s.name, s.value) for s in found] == [
        ("ns_mode", "local"),
        ("child_ns_mode", "local"),
        ("g2h_fallback", "0"),
        ("zz_new_knob", "3"),
    ]
    meanings = {s.name: s.meaning for s in found}
    assert "own" in (meanings["ns_mode"] or "")
    assert "ENODEV" in (meanings["g2h_fallback"] or "")
    assert meanings["zz_new_knob"] is None  # reported, not explained


def test_before_linux_7_there_are_none(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    assert read_sysctls(tmp_path / "proc") == []
    assert namespace_mode(tmp_path / "proc") is None
    assert local_namespace_hint(tmp_path / "proc") is None


def test_info_record_carries_them(tmp_path: Path) -> None:
    paths = empty_machine(tmp_path)
    (paths.proc / "sys/net/vsock").mkdir(parents=True)
    (paths.proc / "sys/net/vsock/ns_mode").write_text("global\n")
    (paths.proc / "sys/net/vsock/g2h_fallback").write_text("1\n")
    record = to_record(probe(paths))
    assert record["ns_mode"] == "global" and record["child_ns_mode"] is None
    assert [(s["name"], s["value"]) for s in record["sysctls"]] == [
        ("ns_mode", "global"),
        ("g2h_fallback", "1"),
    ]


@pytest.mark.parametrize("mode", ["local", "global"])
def test_the_hint_speaks_only_of_a_local_namespace(tmp_path: Path, mode: str) -> None:
    hint = local_namespace_hint(linux7_proc(tmp_path, ns_mode=mode))
    assert (hint is not None) == (mode == "local")


def test_a_refused_connect_outside_a_local_namespace_keeps_its_usual_hint() -> None:
    """This machine is not in a local namespace: the usual hint stands (the local one
    is asserted for real in the Linux 7 boot)."""
    if namespace_mode() == "local":
        pytest.skip("this machine itself runs in a local vsock namespace")
    exc = VsockError(errno.ECONNRESET, Operation.CONNECT, VsockAddress(1, 7100))
    assert describe(exc).endswith("is the listener running, on this port, with this socket type?")
