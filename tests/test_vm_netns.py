"""vsock network namespaces (Linux 7.0+), for real over loopback in the Linux 7 boot.

A namespace made from one whose ``child_ns_mode`` is ``local`` has vsock of its
own: its loopback reaches only its own listeners. The initial namespace's
``child_ns_mode`` is never written here (its first write locks it): a
*parent* namespace in global mode is told ``local`` and the local namespaces
are made from it, as the kernel's own selftests do.

Each namespace is held by a ``sleep`` made with ``unshare -n``; commands run
in it through ``nsenter -n -t PID``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.peers import keep_reading, read_until_listening, stop_process, vsockctl_args
from tests.records import json_record, json_records
from vsockctl.exit_status import ExitStatus

pytestmark = [pytest.mark.vsock, pytest.mark.linux7]

LOCAL_MODE = "local mode"  # what vsockctl's messages say of such a namespace


@dataclass
class Namespace:
    """A network namespace, held by a process living in it."""

    holder: subprocess.Popen[bytes]

    def argv(self, *args: str) -> list[str]:
        return ["nsenter", "-n", "-t", str(self.holder.pid), *args]

    def run(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.argv(*vsockctl_args(*args)), input=stdin, capture_output=True, timeout=60
        )

    def sysctl(self, name: str) -> str:
        done = subprocess.run(self.argv("cat", f"/proc/sys/net/vsock/{name}"),
                              capture_output=True, check=True, timeout=30)  # fmt: skip
        return done.stdout.decode().strip()


def _hold(*prefix: str, setup: str = "") -> Namespace:
    """A new network namespace (made from ``prefix``'s), with ``setup`` run in it first."""
    script = f"{setup} && exec sleep 3600" if setup else "exec sleep 3600"
    holder = subprocess.Popen([*prefix, "unshare", "-n", "sh", "-c", script])
    deadline = time.monotonic() + 30
    here = Path("/proc/self/ns/net").resolve()
    while Path(f"/proc/{holder.pid}/ns/net").resolve() == here or not _slept(holder.pid):
        assert holder.poll() is None, f"unshare failed ({holder.returncode})"
        assert time.monotonic() < deadline, "the namespace did not come up"
        time.sleep(0.05)
    return Namespace(holder)


def _slept(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"
    except OSError:
        return False


@dataclass
class Spaces:
    initial: Namespace | None  # None: this process's own namespace
    parent: Namespace  # global, child_ns_mode=local
    a: Namespace  # local
    b: Namespace  # local
    g: Namespace  # global, a sibling of the parent


@pytest.fixture(scope="module")
def spaces() -> Iterator[Spaces]:
    if not Path("/proc/sys/net/vsock/ns_mode").exists():
        pytest.skip("needs Linux 7's vsock network namespaces (scripts/vmtest --kernel 7)")
    parent = _hold(setup="echo local > /proc/sys/net/vsock/child_ns_mode")
    made = [parent]
    try:
        made += [_hold(*parent.argv()), _hold(*parent.argv()), _hold()]
        yield Spaces(None, parent, made[1], made[2], made[3])
    finally:
        for space in made:
            stop_process(space.holder)


def _listen(where: Namespace | None, port: int) -> subprocess.Popen[bytes]:
    """``vsockctl listen -k`` on ``port`` in ``where``, once it listens (its records go
    to stderr: stdout carries what it receives)."""
    argv = vsockctl_args("--json", "listen", "-k", "--port", str(port))
    if where is not None:
        argv = where.argv(*argv)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    read_until_listening(proc.stderr)
    keep_reading(proc.stdout)
    keep_reading(proc.stderr)
    return proc


def _connect(where: Namespace | None, port: int) -> subprocess.CompletedProcess[bytes]:
    args = ("connect", f"1:{port}", "--timeout", "5s")
    if where is not None:
        return where.run(*args, stdin=b"hello\n")
    return subprocess.run(vsockctl_args(*args), input=b"hello\n", capture_output=True, timeout=60)


def test_the_modes_are_what_the_namespaces_were_made_with(spaces: Spaces) -> None:
    assert Path("/proc/sys/net/vsock/ns_mode").read_text().strip() == "global"
    assert Path("/proc/sys/net/vsock/child_ns_mode").read_text().strip() == "global"
    assert [spaces.parent.sysctl("ns_mode"), spaces.parent.sysctl("child_ns_mode")] == [
        "global",
        "local",
    ]
    assert [s.sysctl("ns_mode") for s in (spaces.a, spaces.b, spaces.g)] == [
        "local",
        "local",
        "global",
    ]


def test_local_namespaces_reach_themselves_and_not_each_other(spaces: Spaces) -> None:
    listener = _listen(spaces.a, 7101)
    try:
        itself = _connect(spaces.a, 7101)
        other = _connect(spaces.b, 7101)
        initial = _connect(None, 7101)
    finally:
        stop_process(listener)
    assert itself.returncode == 0, itself.stderr
    assert other.returncode == ExitStatus.CONNECTION_REFUSED, other.stderr
    said = other.stderr.decode()
    assert "ECONNRESET" in said and LOCAL_MODE in said and "ns_mode" in said, said
    # the initial namespace is global: for it nothing listens, and it is told just that
    assert initial.returncode == ExitStatus.CONNECTION_REFUSED, initial.stderr
    assert LOCAL_MODE not in initial.stderr.decode()


def test_global_namespaces_share_loopback_and_a_local_one_is_told_why_not(
    spaces: Spaces,
) -> None:
    listener = _listen(None, 7102)
    try:
        sibling = _connect(spaces.g, 7102)
        parent = _connect(spaces.parent, 7102)
        local = _connect(spaces.a, 7102)
    finally:
        stop_process(listener)
    assert sibling.returncode == 0, sibling.stderr
    assert parent.returncode == 0, parent.stderr
    assert local.returncode == ExitStatus.CONNECTION_REFUSED, local.stderr
    assert LOCAL_MODE in local.stderr.decode(), local.stderr


def test_info_in_a_local_namespace_says_what_local_means(spaces: Spaces) -> None:
    record = json_record(spaces.a.run("--json", "info").stdout)
    assert (record["ns_mode"], record["child_ns_mode"]) == ("local", "local")
    sysctls = {s["name"]: s for s in record["sysctls"]}
    assert {"ns_mode", "child_ns_mode", "g2h_fallback"} <= set(sysctls), sysctls
    assert sysctls["ns_mode"]["value"] == "local"
    assert "own" in sysctls["ns_mode"]["meaning"], sysctls["ns_mode"]
    assert all(s["meaning"] for s in sysctls.values()), sysctls
    human = spaces.a.run("info").stdout.decode()
    assert "namespace mode" in human and "local (children: local)" in human, human


def test_ls_lists_only_its_own_namespaces_sockets(spaces: Spaces) -> None:
    in_a = _listen(spaces.a, 7103)
    in_initial = _listen(None, 7104)
    try:
        seen_in_a = spaces.a.run("--json", "ls", "--listening")
        seen_in_b = spaces.b.run("--json", "ls", "--listening")
        seen_here = subprocess.run(vsockctl_args("--json", "ls", "--listening"),
                                   capture_output=True, timeout=60)  # fmt: skip
        table = spaces.a.run("ls", "--listening").stderr.decode()
    finally:
        stop_process(in_a)
        stop_process(in_initial)

    def ports(done: subprocess.CompletedProcess[bytes]) -> set[int]:
        assert done.returncode == 0, done.stderr
        return {r["local_port"] for r in json_records(done.stdout, "socket")}

    assert 7103 in ports(seen_in_a) and 7104 not in ports(seen_in_a)
    assert not {7103, 7104} & ports(seen_in_b)
    assert 7104 in ports(seen_here) and 7103 not in ports(seen_here)
    assert "network namespace's sockets only" in table, table


def test_doctor_names_the_namespace_that_holds_the_listener(spaces: Spaces) -> None:
    """From local namespace A, a listener in the initial namespace is out of reach:
    doctor finds it there (it runs as root, so it can look) and says so."""
    listener = _listen(None, 7105)
    try:
        done = spaces.a.run("--json", "doctor", "1:7105")
        fine = spaces.g.run("--json", "doctor", "1:7105")
    finally:
        stop_process(listener)
    checks = {c["name"]: c for c in json_records(done.stdout, "check")}
    assert done.returncode == ExitStatus.CONNECTION_REFUSED, done.stdout
    namespace = checks["namespace"]
    assert namespace["passed"] is False, checks
    assert "another network namespace" in namespace["seen"] and "local mode" in namespace["seen"]
    assert f"[{listener.pid}] there" in namespace["seen"], namespace  # the listener itself
    assert namespace["fix"].startswith(f"nsenter -n -t {listener.pid} ")
    assert checks["port"]["passed"] is None  # not connected to: the cause is known
    assert fine.returncode == 0, fine.stdout  # a global sibling reaches it
