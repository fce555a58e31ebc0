"""The vsockmon link a capture reads: found, or made for the capture and removed after it.

What ``modprobe vsockmon; ip link add type vsockmon; ip link set vsockmon0 up``
does, in rtnetlink messages (``RTM_NEWLINK``/``RTM_DELLINK``), so that a
capture needs no iproute2 and takes back exactly what it added: the link,
its being up, the module, whichever of them it had to bring.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vsockctl.discover.kmod import ModuleState, load_hint, module_state
from vsockctl.errors import VsockUnavailableError

ARPHRD_VSOCKMON = 826
SYS_NET = Path("/sys/class/net")
MODULE = "vsockmon"
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13

_NLMSG = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTM_NEWLINK, _RTM_DELLINK = 16, 17
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
_NLMSG_ERROR = 2
_IFLA_IFNAME, _IFLA_LINKINFO, _IFLA_INFO_KIND = 3, 18, 1
_IFF_UP = 0x1


def _attr(kind: int, data: bytes) -> bytes:
    header = struct.pack("=HH", 4 + len(data), kind)
    return header + data + b"\0" * (-len(data) % 4)


def _rtnetlink(message_type: int, flags: int, index: int, up: bool, attrs: bytes = b"") -> None:
    """Send one link request and wait for its acknowledgement; OSError with its errno."""
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, _IFF_UP if up else 0, _IFF_UP) + attrs
    flags |= _NLM_F_REQUEST | _NLM_F_ACK
    header = _NLMSG.pack(_NLMSG.size + len(body), message_type, flags, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(5)
        sock.send(header + body)
        reply = sock.recv(65536)
    if len(reply) >= _NLMSG.size + 4 and _NLMSG.unpack_from(reply)[1] == _NLMSG_ERROR:
        (err,) = struct.unpack_from("=i", reply, _NLMSG.size)
        if err:
            raise OSError(-err, os.strerror(-err))


def create(name: str) -> None:
    """``ip link add NAME type vsockmon`` and ``ip link set NAME up``, in one request."""
    info = _attr(_IFLA_INFO_KIND, MODULE.encode())
    attrs = _attr(_IFLA_IFNAME, name.encode() + b"\0") + _attr(_IFLA_LINKINFO, info)
    _rtnetlink(_RTM_NEWLINK, _NLM_F_CREATE | _NLM_F_EXCL, 0, True, attrs)


def set_up(name: str, up: bool) -> None:
    _rtnetlink(_RTM_NEWLINK, 0, socket.if_nametoindex(name), up)


def delete(name: str) -> None:
    _rtnetlink(_RTM_DELLINK, 0, socket.if_nametoindex(name), False)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def is_up(name: str, sys_net: Path = SYS_NET) -> bool:
    flags = _read(sys_net / name / "flags")
    return flags is not None and bool(int(flags, 0) & _IFF_UP)


def monitor_links(sys_net: Path = SYS_NET) -> list[str]:
    """This network namespace's vsockmon interfaces, by name."""
    try:
        names = sorted(p.name for p in sys_net.iterdir())
    except OSError:
        return []
    return [n for n in names if _read(sys_net / n / "type") == str(ARPHRD_VSOCKMON)]


def missing_capabilities(status: Path = Path("/proc/self/status")) -> list[str]:
    """Which of CAP_NET_ADMIN and CAP_NET_RAW this process lacks."""
    effective = 0
    with contextlib.suppress(OSError):
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                effective = int(line.split()[1], 16)
    wanted = {"CAP_NET_ADMIN": CAP_NET_ADMIN, "CAP_NET_RAW": CAP_NET_RAW}
    return [name for name, bit in wanted.items() if not effective >> bit & 1]


@dataclass
class Monitor:
    """The link a capture reads, and what the capture changed to have it."""

    interface: str
    created: bool = False  # the link was added for this capture
    raised: bool = False  # it was down and was set up for it
    module_loaded: bool = False  # vsockmon was loaded for it


def _load_module() -> bool:
    """Load vsockmon if it is not there; whether this did. VsockUnavailableError if it cannot be."""
    state = module_state(MODULE)
    if state in (ModuleState.LOADED, ModuleState.BUILTIN):
        return False
    if state is not ModuleState.LOADABLE:
        raise VsockUnavailableError("capture needs the vsockmon module", load_hint(MODULE, state))
    done = subprocess.run(["modprobe", MODULE], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise VsockUnavailableError(
            f"'modprobe {MODULE}' failed: {said}", "capture cannot see packets without it"
        )
    return True


def _free_name(taken: list[str]) -> str:
    number = 0
    while f"vsockmon{number}" in taken or (SYS_NET / f"vsockmon{number}").exists():
        number += 1
    return f"vsockmon{number}"


def _check_access() -> None:
    lacking = missing_capabilities()
    if lacking:
        raise VsockUnavailableError(
            f"capture needs root ({' and '.join(lacking)}: a packet socket on a vsockmon link)",
            "run it with sudo, or read a file with -r",
        )


@contextlib.contextmanager
def monitor(interface: str | None = None) -> Iterator[Monitor]:
    """A vsockmon link that is up: ``interface``, else one already up, else a new one."""
    _check_access()
    links = monitor_links()
    if interface is not None and interface not in links:
        kind = "not a vsockmon interface" if (SYS_NET / interface).exists() else "no such interface"
        raise VsockUnavailableError(f"{interface}: {kind}", "leave out -i: capture makes one")
    if interface is None:
        up = [name for name in links if is_up(name)]
        interface = up[0] if up else links[0] if links else None
    if interface is not None:
        found = Monitor(interface, raised=not is_up(interface))
        if found.raised:
            _change(lambda: set_up(found.interface, True), "setting up", found.interface)
        try:
            yield found
        finally:
            if found.raised:
                with contextlib.suppress(OSError):
                    set_up(found.interface, False)
        return
    made = Monitor(_free_name(links), created=True, module_loaded=_load_module())
    try:
        _change(lambda: create(made.interface), "adding", made.interface)
        yield made
    finally:
        with contextlib.suppress(OSError):
            delete(made.interface)
        if made.module_loaded:
            subprocess.run(["modprobe", "-r", MODULE], capture_output=True, check=False)


def _change(action: Callable[[], None], doing: str, name: str) -> None:
    try:
        action()
    except OSError as exc:
        hint = "is another capture removing it?" if exc.errno == errno.ENODEV else None
        message = f"{doing} the vsockmon link {name} failed: {exc.strerror}"
        raise VsockUnavailableError(message, hint) from exc
