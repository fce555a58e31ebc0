"""What vsock this machine has: the kernel, transports, devices, local CID, socket types.

Everything is read from files and by creating and binding sockets; nothing
here connects or sends anywhere. :class:`ProbePaths` and the socket factory
can be replaced, which is how the tests describe a machine without vsock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import socket
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from vsockctl.discover.kmod import LIB_MODULES, ModuleState, load_hint, module_state
from vsockctl.discover.sockmap import try_sockmap
from vsockctl.discover.sysctl import Sysctl, read_sysctls
from vsockctl.errors import VsockError, explain
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.constants import (
    AF_VSOCK,
    IOCTL_VM_SOCKETS_GET_LOCAL_CID,
    SO_ZEROCOPY,
    VMADDR_CID_ANY,
    VMADDR_CID_HOST,
    VMADDR_CID_LOCAL,
    VMADDR_PORT_ANY,
)
from vsockctl.vsock.sockets import SocketFactory, SocketType, bind, open_socket

if TYPE_CHECKING:  # an annotation only: the record loads when --json prints it
    from vsockctl.events.system import Info


@dataclass(frozen=True)
class TransportSpec:
    module: str
    name: str
    role: str  # "guest", "host", "guest/host" or "loopback"
    description: str


TRANSPORTS: tuple[TransportSpec, ...] = (
    TransportSpec(
        "vmw_vsock_virtio_transport",
        "virtio",
        "guest",
        "virtio guest: KVM/QEMU, Firecracker, Cloud Hypervisor",
    ),
    TransportSpec("vhost_vsock", "vhost", "host", "vhost-vsock host side (KVM/QEMU)"),
    TransportSpec("vmw_vsock_vmci_transport", "vmci", "guest/host", "VMware VMCI"),
    TransportSpec("hv_sock", "hyperv", "guest", "Hyper-V guest"),
    TransportSpec("vsock_loopback", "loopback", "loopback", "CID 1, this machine to itself"),
)


@dataclass(frozen=True)
class ProbePaths:
    """Where the probe looks; tests point these at a made-up tree."""

    sys: Path = Path("/sys")
    dev: Path = Path("/dev")
    proc: Path = Path("/proc")
    modules: Path = LIB_MODULES  # each kernel's modules.dep and modules.builtin


@dataclass
class TransportStatus:
    name: str
    module: str
    role: str
    description: str
    available: bool  # its module is loaded (or built in)


@dataclass
class SocketTypeStatus:
    type: str
    available: bool
    errno_name: str | None = None  # where creating or binding failed
    meaning: str | None = None


@dataclass
class FeatureStatus:
    """A kernel feature of vsock, found by trying it (never from the version number)."""

    name: str
    available: bool | None  # None: could not be tried here
    how: str  # what was tried, and what the kernel answered


@dataclass
class SystemInfo:
    """The answer to 'is vsock here, and what can it do?'."""

    kernel: str
    af_vsock: bool
    vsock_module: bool
    local_cid: int | None
    local_cid_error: str | None
    dev_vsock: bool
    dev_vhost_vsock: bool
    transports: list[TransportStatus]
    diag_loaded: bool
    sysctls: list[Sysctl]
    modules: dict[str, str] = field(default_factory=dict)  # module: ModuleState value
    socket_types: list[SocketTypeStatus] = field(default_factory=list)
    features: list[FeatureStatus] = field(default_factory=list)

    def load_hint(self, module: str) -> str:
        """How to get ``module`` on this kernel (or why it cannot be had)."""
        state = ModuleState(self.modules.get(module, ModuleState.UNKNOWN))
        return load_hint(module, state, self.kernel)

    def sysctl(self, name: str) -> str | None:
        """A vsock sysctl's value (``ns_mode`` ...), or None when the kernel has no such file."""
        return next((s.value for s in self.sysctls if s.name == name), None)

    @property
    def loopback(self) -> bool:
        return any(t.name == "loopback" and t.available for t in self.transports)

    @property
    def any_transport(self) -> bool:
        return any(t.available for t in self.transports)

    @property
    def available(self) -> bool:
        """vsock can carry something here: the family exists and a transport is loaded."""
        return self.af_vsock and self.any_transport

    @property
    def role(self) -> str:
        """guest, host, guest+host, or none: from the transports that are present."""
        guest = any(t.available and "guest" in t.role for t in self.transports)
        host = any(t.available and "host" in t.role for t in self.transports)
        if guest and host:
            return "guest+host"
        return "guest" if guest else "host" if host else "none"


def module_present(paths: ProbePaths, module: str) -> bool:
    """Whether a kernel module is loaded or built in (``/sys/module/NAME``)."""
    return (paths.sys / "module" / module).is_dir()


def read_local_cid(paths: ProbePaths) -> tuple[int | None, str | None]:
    """``IOCTL_VM_SOCKETS_GET_LOCAL_CID`` on /dev/vsock: (cid, None) or (None, why not)."""
    try:
        fd = os.open(paths.dev / "vsock", os.O_RDONLY)
    except OSError as exc:
        return None, f"cannot open {paths.dev / 'vsock'}: {exc.strerror}"
    try:
        raw = fcntl.ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, struct.pack("I", 0))
    except OSError as exc:
        return None, f"ioctl on {paths.dev / 'vsock'}: {exc.strerror}"
    finally:
        os.close(fd)
    cid = int(struct.unpack("I", raw)[0])
    if cid == VMADDR_CID_ANY:
        return None, "no transport gives this machine a CID"
    return cid, None


def check_socket_type(sock_type: SocketType, factory: SocketFactory) -> SocketTypeStatus:
    """Create a socket of ``sock_type`` and bind it to any:any (and listen where it can)."""
    try:
        sock = factory(AF_VSOCK, sock_type.number)
        with sock:
            bind(sock, VsockAddress(VMADDR_CID_ANY, VMADDR_PORT_ANY))
            if sock_type.connected:
                sock.listen(1)
    except OSError as exc:
        err = exc.errno if exc.errno is not None else errno.EINVAL
        meaning = explain(err)
        return SocketTypeStatus(sock_type.value, False, meaning.name, meaning.cause)
    return SocketTypeStatus(sock_type.value, True)


def has_af_vsock(factory: SocketFactory) -> bool:
    try:
        open_socket(SocketType.STREAM, factory).close()
    except VsockError as exc:
        return exc.errno != errno.EAFNOSUPPORT
    return True


def probe(
    paths: ProbePaths | None = None,
    factory: SocketFactory = socket.socket,
    kernel: str | None = None,
) -> SystemInfo:
    """Look at this machine's vsock without sending anything anywhere."""
    paths = paths or ProbePaths()
    af_vsock = has_af_vsock(factory)
    transports = [
        TransportStatus(t.name, t.module, t.role, t.description, module_present(paths, t.module))
        for t in TRANSPORTS
    ]
    cid, cid_error = read_local_cid(paths) if af_vsock else (None, "no AF_VSOCK in this kernel")
    release = kernel if kernel is not None else platform.release()
    info = SystemInfo(
        kernel=release,
        af_vsock=af_vsock,
        vsock_module=module_present(paths, "vsock"),
        local_cid=cid,
        local_cid_error=cid_error,
        dev_vsock=(paths.dev / "vsock").exists(),
        dev_vhost_vsock=(paths.dev / "vhost-vsock").exists(),
        transports=transports,
        diag_loaded=module_present(paths, "vsock_diag"),
        sysctls=read_sysctls(paths.proc),
        modules={
            module: module_state(module, release, paths.sys / "module", paths.modules).value
            for module in ("vsock", "vsock_diag", *(t.module for t in TRANSPORTS))
        },
    )
    if af_vsock:
        info.socket_types = [check_socket_type(t, factory) for t in SocketType]
        info.features = check_features(info, factory)
    return info


def _try(what: str, action: Callable[[], object], known: frozenset[int]) -> tuple[bool, str]:
    """Run ``action``: it worked, or failed with an errno that still shows the kernel
    knows the call (``known``), or failed otherwise."""
    try:
        action()
    except OSError as exc:
        err = exc.errno or 0
        name = "EOPNOTSUPP" if err == errno.EOPNOTSUPP else errno.errorcode.get(err, str(err))
        return err in known, f"{what}: {name}"
    return True, f"{what}: accepted"


def _connected_features(info: SystemInfo, factory: SocketFactory) -> list[FeatureStatus]:
    """SIOCOUTQ and SIOCINQ, which only a connected socket answers (6.1 says EOPNOTSUPP
    to both whatever the socket; later kernels say it too on a socket with no
    connection), and a sockmap, which takes only connected sockets. Tried over a
    connection to this machine itself (CID 1), so only where vsock_loopback is
    loaded; elsewhere the ioctls stay unknown (a sockmap is still made, to say
    whether this user could)."""
    names = (("siocoutq", termios.TIOCOUTQ), ("siocinq", termios.FIONREAD))
    if not info.loopback:
        why = "not tried: it needs a connection, and no vsock_loopback is loaded to make one"
        return [FeatureStatus(name, None, why) for name, _ in names] + [
            FeatureStatus("sockmap", *try_sockmap(None))
        ]
    try:
        with (
            factory(AF_VSOCK, socket.SOCK_STREAM) as server,
            factory(AF_VSOCK, socket.SOCK_STREAM) as client,
        ):
            server.bind((VMADDR_CID_LOCAL, VMADDR_PORT_ANY))
            server.listen(1)
            client.settimeout(5)
            client.connect((VMADDR_CID_LOCAL, server.getsockname()[1]))
            peer, _ = server.accept()
            with peer:
                results = []
                for (name, request), end in zip(names, (client, peer), strict=True):
                    ok, how = _try(
                        f"ioctl {name.upper()} on a connection over CID 1",
                        partial(fcntl.ioctl, end.fileno(), request, b"\0" * 4),
                        frozenset(),
                    )
                    results.append(FeatureStatus(name, ok, how))
                return [*results, FeatureStatus("sockmap", *try_sockmap(client.fileno()))]
    except OSError as exc:
        why = f"not tried: no connection over CID 1 ({exc.strerror})"
        return [FeatureStatus(name, None, why) for name in ("siocoutq", "siocinq", "sockmap")]


def check_features(info: SystemInfo, factory: SocketFactory) -> list[FeatureStatus]:
    """The vsock features this kernel has, each found by trying it."""
    seqpacket = next((s for s in info.socket_types if s.type == "seqpacket"), None)
    refused = seqpacket.errno_name if seqpacket is not None else None
    features = [
        FeatureStatus(
            "seqpacket",
            seqpacket is not None and seqpacket.available,
            "socket, bind and listen of a SOCK_SEQPACKET socket"
            + (f": {refused}" if refused else ""),
        )
    ]
    with factory(AF_VSOCK, socket.SOCK_STREAM) as sock:
        ok, how = _try(
            "setsockopt SO_ZEROCOPY (MSG_ZEROCOPY sends)",
            lambda: sock.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1),
            frozenset(),
        )
    features.append(FeatureStatus("msg_zerocopy", ok, how))
    features += _connected_features(info, factory)
    features.append(
        FeatureStatus(
            "netns",
            info.sysctl("ns_mode") is not None,
            f"/proc/sys/net/vsock/ns_mode: {info.sysctl('ns_mode') or 'absent'}",
        )
    )
    return features


def describe_cid(cid: int) -> str:
    """A few words on what a CID is."""
    return {
        0: "hypervisor",
        1: "local (loopback)",
        VMADDR_CID_HOST: "host",
        VMADDR_CID_ANY: "any",
    }.get(cid, "guest")


def findings(info: SystemInfo) -> list[str]:
    """Plain-language notes on what the probe found and what follows from it."""
    if not info.af_vsock:
        return [
            "This kernel has no AF_VSOCK: no vsock at all. "
            "Try 'modprobe vsock', or a kernel built with CONFIG_VSOCKETS."
        ]
    notes: list[str] = []
    if not info.any_transport:
        notes.append(
            "AF_VSOCK exists but no transport is loaded, so nothing can be carried "
            "(/dev/vsock alone proves nothing). Load the one for this machine: "
            "vmw_vsock_virtio_transport in a KVM guest, vhost_vsock on a KVM host, "
            "vsock_loopback for CID 1."
        )
    if not info.loopback:
        notes.append(
            "No loopback transport: nothing can be sent to CID 1 (local) here; "
            f"vsock_loopback (Linux 5.6+): {info.load_hint('vsock_loopback')}."
        )
    if not info.diag_loaded:
        notes.append(
            f"vsock_diag is not loaded, and 'vsockctl ls' needs it: {info.load_hint('vsock_diag')}."
        )
    if info.local_cid is None and info.local_cid_error:
        notes.append(f"Local CID unknown: {info.local_cid_error}.")
    return notes


def to_record(info: SystemInfo) -> Info:
    """The probe as its ``--json`` record, with the derived answers."""
    return {
        "event": "info",
        "kernel": info.kernel,
        "af_vsock": info.af_vsock,
        "vsock_module": info.vsock_module,
        "local_cid": info.local_cid,
        "local_cid_error": info.local_cid_error,
        "dev_vsock": info.dev_vsock,
        "dev_vhost_vsock": info.dev_vhost_vsock,
        "transports": [
            {
                "name": t.name,
                "module": t.module,
                "role": t.role,
                "description": t.description,
                "available": t.available,
            }
            for t in info.transports
        ],
        "diag_loaded": info.diag_loaded,
        "ns_mode": info.sysctl("ns_mode"),
        "child_ns_mode": info.sysctl("child_ns_mode"),
        "sysctls": [{"name": s.name, "value": s.value, "meaning": s.meaning} for s in info.sysctls],
        "modules": dict(info.modules),
        "socket_types": [
            {
                "type": s.type,
                "available": s.available,
                "errno_name": s.errno_name,
                "meaning": s.meaning,
            }
            for s in info.socket_types
        ],
        "features": [
            {"name": f.name, "available": f.available, "how": f.how} for f in info.features
        ],
        "available": info.available,
        "role": info.role,
        "loopback": info.loopback,
        "notes": findings(info),
    }
