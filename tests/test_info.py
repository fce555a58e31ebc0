"""``vsockctl info`` on this real machine, and on a made-up machine without vsock."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

import pytest

from tests.conftest import Invoke
from tests.fakes import empty_machine, errno_factory
from tests.records import json_record
from vsockctl.cli.env import Env
from vsockctl.discover.kmod import load_hint, module_state
from vsockctl.discover.system import TRANSPORTS
from vsockctl.vsock.constants import IOCTL_VM_SOCKETS_GET_LOCAL_CID

HAS_VSOCK = Path("/sys/module/vsock").is_dir()
needs_af_vsock = pytest.mark.skipif(not HAS_VSOCK, reason="this kernel has no AF_VSOCK")


def _ioctl_cid() -> int | None:
    try:
        fd = os.open("/dev/vsock", os.O_RDONLY)
    except OSError:
        return None
    try:
        raw = fcntl.ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, b"\0\0\0\0")
    finally:
        os.close(fd)
    cid = struct.unpack("I", raw)[0]
    return None if cid == 0xFFFFFFFF else int(cid)


def _info_json(invoke: Invoke, *args: str) -> dict[str, object]:
    result = invoke(["info", "--json", *args])
    assert result.stderr == ""
    record = json_record(result.stdout)
    assert isinstance(record, dict)
    return record


@needs_af_vsock
def test_local_cid_is_what_the_ioctl_says(invoke: Invoke) -> None:
    assert _info_json(invoke)["local_cid"] == _ioctl_cid()


@needs_af_vsock
def test_transports_match_sys_module(invoke: Invoke) -> None:
    record = _info_json(invoke)
    transports = record["transports"]
    assert isinstance(transports, list)
    reported = {t["name"]: t["available"] for t in transports}
    expected = {t.name: Path("/sys/module", t.module).is_dir() for t in TRANSPORTS}
    assert reported == expected
    assert record["loopback"] == expected["loopback"]


@pytest.mark.skipif(
    not Path("/sys/module/vmw_vsock_virtio_transport").is_dir()
    or Path("/sys/module/vsock_loopback").is_dir(),
    reason="only on a virtio guest without loopback (the development machines)",
)
def test_development_machine_is_a_virtio_guest_without_loopback(invoke: Invoke) -> None:
    result = invoke(["info"])
    assert result.exit_code == 0
    assert "No loopback transport" in result.stdout
    # the hint is true of this kernel: modprobe only where modprobe would find it
    assert load_hint("vsock_loopback", module_state("vsock_loopback")) in result.stdout
    record = _info_json(invoke)
    assert record["role"] == "guest" and record["loopback"] is False


INFO_KEYS: dict[str, type | tuple[type, ...]] = {
    "event": str,
    "kernel": str,
    "af_vsock": bool,
    "vsock_module": bool,
    "local_cid": (int, type(None)),
    "local_cid_error": (str, type(None)),
    "dev_vsock": bool,
    "dev_vhost_vsock": bool,
    "transports": list,
    "diag_loaded": bool,
    "ns_mode": (str, type(None)),
    "child_ns_mode": (str, type(None)),
    "sysctls": list,
    "modules": dict,
    "socket_types": list,
    "features": list,
    "available": bool,
    "role": str,
    "loopback": bool,
    "notes": list,
}


def test_json_schema(invoke: Invoke) -> None:
    record = _info_json(invoke)
    assert set(record) == set(INFO_KEYS)
    assert record["event"] == "info"
    for key, kind in INFO_KEYS.items():
        assert isinstance(record[key], kind), key
    for t in record["transports"]:  # type: ignore[attr-defined]
        assert set(t) == {"name", "module", "role", "description", "available"}
    for s in record["socket_types"]:  # type: ignore[attr-defined]
        assert set(s) == {"type", "available", "errno_name", "meaning"}


@needs_af_vsock
def test_socket_types_agree_with_the_kernel(invoke: Invoke) -> None:
    types = {s["type"]: s for s in _info_json(invoke)["socket_types"]}  # type: ignore[attr-defined]
    assert types["stream"]["available"] is True
    if not Path("/sys/module/vmw_vsock_vmci_transport").is_dir():
        assert types["dgram"]["available"] is False
        assert types["dgram"]["errno_name"] == "ENODEV"


def test_human_output_goes_to_stdout_and_nothing_to_stderr(invoke: Invoke) -> None:
    result = invoke(["info"])
    assert result.stderr == ""
    assert "Transports" in result.stdout and "AF_VSOCK" in result.stdout


def test_quiet_prints_nothing(invoke: Invoke) -> None:
    result = invoke(["--quiet", "info"])
    assert result.stdout == "" and result.stderr == ""


def test_machine_without_vsock(invoke: Invoke, tmp_path: Path) -> None:
    env = Env(socket_factory=errno_factory(errno.EAFNOSUPPORT), probe_paths=empty_machine(tmp_path))
    result = invoke(["info", "--json"], env=env)
    assert result.exit_code == 3
    record = json_record(result.stdout)
    assert record["af_vsock"] is False and record["available"] is False
    assert record["socket_types"] == []
    assert "CONFIG_VSOCKETS" in record["notes"][0]


def test_vsock_without_transport(invoke: Invoke, tmp_path: Path) -> None:
    paths = empty_machine(tmp_path)
    (paths.sys / "module" / "vsock").mkdir()
    env = Env(probe_paths=paths)
    result = invoke(["info"], env=env)
    assert result.exit_code == 3
    assert "no transport is loaded" in result.stdout
