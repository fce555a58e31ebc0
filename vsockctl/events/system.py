"""The records of ``info``, ``ls``, ``vms`` and ``sockopt``: what this machine has and runs."""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired, TypedDict

from .record import Declared
from .transfer import TRANSFER, Refusal


class Sockopt(Refusal):
    event: Literal["sockopt"]
    name: Annotated[str, "the option"]
    requested: Annotated[int, "the value asked for (bytes; ns for durations; 0 or 1 for on/off)"]
    requested_text: Annotated[str, "as typed"]
    effective: Annotated[
        int | None, "what the kernel holds now, in the same unit (null when refused)"
    ]
    changed: Annotated[bool, "whether the kernel changed the value"]
    note: Annotated[str | None, "why it differs, or null"]


class SockoptValue(Refusal):
    event: Literal["sockopt_value"]
    name: Annotated[str, "the option"]
    value: Annotated[int | None, "its value (ns for durations), or null when refused"]


class SockoptOption(TypedDict):
    event: Literal["sockopt_option"]
    name: Annotated[str, "its name on the command line"]
    level: Annotated[str, "the socket level's name"]
    level_number: Annotated[int, "the level"]
    number: Annotated[int, "the option number"]
    ctype: Annotated[str, "its C type"]
    width: Annotated[int, "bytes"]
    default: Annotated[str, "the kernel's default"]
    linux: Annotated[str | None, "the Linux constant's name"]
    vmci: Annotated[str | None, "the VMware constant's name"]
    available: Annotated[bool, "whether this kernel handles it"]
    value: Annotated[int | None, "its value on a fresh socket (ns for durations), or null"]
    errno_name: Annotated[str | None, "why not, or null"]
    summary: Annotated[str, "what it does"]


class Transport(TypedDict):
    """TRANSPORT: one transport this kernel knows."""

    name: Annotated[str, "virtio, vhost, vmci, hyperv or loopback"]
    module: Annotated[str, "its kernel module"]
    role: Annotated[str, "guest, host, guest/host or loopback"]
    description: Annotated[str, "what it is for"]
    available: Annotated[bool, "whether it is loaded here"]


class SocketTypeState(TypedDict):
    """SOCKET_TYPE: one socket type, tried here."""

    type: Annotated[str, "stream, seqpacket or dgram"]
    available: Annotated[bool, "whether a socket of this type can be made and bound"]
    errno_name: Annotated[str | None, "why not, or null"]
    meaning: Annotated[str | None, "what that errno means here, or null"]


class Feature(TypedDict):
    """FEATURE: one kernel feature, tried here."""

    name: Annotated[str, "seqpacket, msg_zerocopy, siocoutq, siocinq, sockmap or netns"]
    available: Annotated[bool | None, "whether it works here (null: could not be tried)"]
    how: Annotated[str, "what was tried, and what the kernel answered"]


class VsockSysctl(TypedDict):
    """SYSCTL: one file under /proc/sys/net/vsock (Linux 7+), for this network namespace."""

    name: Annotated[str, "ns_mode, child_ns_mode, g2h_fallback, or any other the kernel has"]
    value: Annotated[str, "its content"]
    meaning: Annotated[str | None, "what that value means for reaching VMs, or null"]


class Info(TypedDict):
    event: Literal["info"]
    kernel: Annotated[str, "the running kernel's release"]
    af_vsock: Annotated[bool, "whether socket(AF_VSOCK) works"]
    vsock_module: Annotated[bool, "whether the vsock module is loaded or built in"]
    local_cid: Annotated[int | None, "this machine's CID, or null"]
    local_cid_error: Annotated[str | None, "why it is unknown, or null"]
    dev_vsock: Annotated[bool, "whether /dev/vsock exists"]
    dev_vhost_vsock: Annotated[bool, "whether /dev/vhost-vsock exists"]
    transports: Annotated[list[Transport], "the transports this kernel knows (TRANSPORT)"]
    diag_loaded: Annotated[bool, "whether vsock_diag is loaded (for ls)"]
    ns_mode: Annotated[str | None, "/proc/sys/net/vsock/ns_mode, or null"]
    child_ns_mode: Annotated[str | None, "/proc/sys/net/vsock/child_ns_mode, or null"]
    sysctls: Annotated[list[VsockSysctl], "every vsock sysctl of this namespace (SYSCTL)"]
    modules: Annotated[
        dict[str, str],
        "{module: loaded, built-in, loadable, absent (this kernel was built without it) "
        "or unknown (no /lib/modules for this kernel)}",
    ]
    socket_types: Annotated[list[SocketTypeState], "each socket type tried (SOCKET_TYPE)"]
    features: Annotated[list[Feature], "each kernel feature tried here (FEATURE)"]
    available: Annotated[bool, "whether vsock can carry data here"]
    role: Annotated[str, "guest, host, guest+host or none"]
    loopback: Annotated[bool, "whether CID 1 (vsock_loopback) works"]
    notes: Annotated[list[str], "findings, as text"]


class PortCheck(TypedDict):
    """PORT: whether a guest port accepted."""

    port: Annotated[int, "the port asked about"]
    open: Annotated[bool, "whether it accepted"]
    error: NotRequired[Annotated[str, "why not, in one line"]]
    exit_status: NotRequired[Annotated[int, "the exit status that failure has"]]


class Uds(TypedDict):
    event: Literal["uds"]
    path: Annotated[str, "the socket's path"]
    exists: Annotated[bool, "whether the path exists"]
    socket: Annotated[bool, "whether it is a Unix socket"]
    accepting: Annotated[bool, "whether something accepts on it"]
    port: NotRequired[Annotated[PortCheck, "with --port: whether CONNECT PORT got an OK"]]


class Process(TypedDict):
    """PROCESS: a process holding the socket."""

    pid: Annotated[int, "the process"]
    name: Annotated[str | None, "its name, or null when it could not be read"]


class Socket(TypedDict):
    event: Literal["socket"]
    type: Annotated[str, "stream, seqpacket or dgram"]
    state: Annotated[str, "listen, established ..."]
    local: Annotated[str, "CID:PORT"]
    local_cid: Annotated[int, "its CID"]
    local_port: Annotated[int, "its port"]
    peer: Annotated[str, "CID:PORT"]
    peer_cid: Annotated[int, "its CID"]
    peer_port: Annotated[int, "its port"]
    shutdown: Annotated[str, "which directions are shut down"]
    inode: Annotated[int, "the socket's inode"]
    cookie: Annotated[int, "the kernel's socket cookie"]
    processes: Annotated[list[Process], "the processes holding it"]


class Vm(TypedDict):
    event: Literal["vm"]
    vmm: Annotated[
        str,
        "qemu, qemu (libvirt), libvirt, firecracker, cloud-hypervisor, crosvm, "
        "vhost-device-vsock or systemd-vmspawn",
    ]
    pid: Annotated[int, "the VMM's process (0 when libvirt names a domain whose QEMU is not seen)"]
    name: Annotated[str, "the name that works as an address"]
    cid: Annotated[int | None, "the guest's CID, or null"]
    uds: Annotated[
        str | None, "the hybrid vsock socket (Firecracker, Cloud Hypervisor ...), or null"
    ]
    source: Annotated[str, "where the CID or socket came from"]
    notes: Annotated[list[str], "what could not be read, and why"]
    probe: NotRequired[Annotated[PortCheck, "with --probe: whether the guest accepted"]]


class VmSkipped(TypedDict):
    event: Literal["vm_skipped"]
    error: Annotated[str, "why a VMM process could not be read"]


class DoctorCheck(TypedDict):
    event: Literal["check"]
    name: Annotated[
        str,
        "af_vsock, transport, conflicts, device, vmm, cid2, namespace, hybrid, port or held",
    ]
    title: Annotated[str, "the check, in words"]
    passed: Annotated[bool | None, "whether it passed (null: not made, an earlier one failed)"]
    seen: Annotated[str, "what was found"]
    meaning: Annotated[str | None, "for a failure: what it means, or null"]
    fix: Annotated[str | None, "for a failure: what to run, or null"]
    exit_status: Annotated[int, "the exit status this failure has (0 when it passed)"]


class Diagnosis(TypedDict):
    event: Literal["diagnosis"]
    target: Annotated[str, "what was checked: CID:PORT, the hybrid socket and port, or a port"]
    passed: Annotated[bool, "whether every check passed"]
    first_failure: Annotated[str | None, "the name of the first check that failed, or null"]
    exit_status: Annotated[int, "the first failure's exit status (0 when all passed)"]


DECLARED = (
    Declared(
        Sockopt,
        (*TRANSFER, "throughput", "sockopt", "forward"),
        "an option set (--sockopt, the default vsock buffer, sockopt set)",
    ),
    Declared(SockoptValue, ("sockopt",), "an option read (sockopt get)"),
    Declared(SockoptOption, ("sockopt",), "an option vsockctl knows (sockopt list)"),
    Declared(Info, ("info",), "the report on vsock here"),
    Declared(Uds, ("info",), "a hybrid vsock socket checked (info --uds)"),
    Declared(Socket, ("ls",), "one vsock socket"),
    Declared(Vm, ("vms",), "a guest found on this host"),
    Declared(VmSkipped, ("vms",), "a VMM process that could not be read"),
    Declared(DoctorCheck, ("doctor",), "one check, in order"),
    Declared(Diagnosis, ("doctor",), "the verdict, after the checks"),
)
