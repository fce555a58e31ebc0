"""The vsock sysctls of this network namespace (``/proc/sys/net/vsock/``), with what
each value means for reaching VMs.

Probed by listing the directory, not by kernel version: whatever the kernel
has is reported, known or not. Linux 7.0 added network namespaces to vsock:
``ns_mode`` (this namespace's mode, fixed when the namespace was made),
``child_ns_mode`` (the mode namespaces made from here get; its first write
locks it) and, with them, ``g2h_fallback`` (a CID that no host-side transport
owns goes to the guest transport instead of failing). Only the host-side
transports (vhost) and loopback are namespace-aware; the guest transports
(virtio, VMCI, Hyper-V) stay global.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DIRECTORY = "sys/net/vsock"  # under /proc
LOCAL = "local"

_MODE = {
    "global": "vsock here is shared with every other namespace in global mode: their "
    "listeners and VMs are reachable, and they reach this namespace's",
    LOCAL: "vsock here is this namespace's own: only its listeners and the VMs started "
    "in it are reachable (loopback and vhost), and nothing outside reaches in",
}
_CHILD = {
    "global": "network namespaces made from here share vsock with the global ones",
    LOCAL: "network namespaces made from here get vsock of their own (local mode)",
}
_FALLBACK = {
    "1": "a CID no VM of this host owns goes to the host above (the guest transport), "
    "with VMADDR_FLAG_TO_HOST set on the peer address",
    "0": "a CID above 2 goes only to this host's VMs (vhost): one no VM owns fails with ENODEV",
}
MEANINGS: dict[str, dict[str, str]] = {
    "ns_mode": _MODE,
    "child_ns_mode": _CHILD,
    "g2h_fallback": _FALLBACK,
}


@dataclass(frozen=True)
class Sysctl:
    """One vsock sysctl: its value, and what that means here (None when unknown)."""

    name: str
    value: str
    meaning: str | None


def read_sysctls(proc: Path = Path("/proc")) -> list[Sysctl]:
    """Every file under ``/proc/sys/net/vsock``: the known ones first, then the rest by
    name; [] before Linux 7."""
    directory = proc / DIRECTORY
    try:
        order = {name: rank for rank, name in enumerate(MEANINGS)}
        names = sorted(
            (entry.name for entry in directory.iterdir() if entry.is_file()),
            key=lambda name: (order.get(name, len(order)), name),
        )
    except OSError:
        return []
    found = []
    for name in names:
        try:
            value = (directory / name).read_text().strip()
        except OSError as exc:  # write-only, or gone meanwhile
            value = f"unreadable: {exc.strerror or exc}"
        found.append(Sysctl(name, value, MEANINGS.get(name, {}).get(value)))
    return found


def namespace_mode(proc: Path = Path("/proc")) -> str | None:
    """This network namespace's vsock mode (``global``/``local``); None before Linux 7."""
    try:
        return (proc / DIRECTORY / "ns_mode").read_text().strip()
    except OSError:
        return None


def local_namespace_hint(proc: Path = Path("/proc")) -> str | None:
    """What to say when a peer was not found and this namespace is in local mode."""
    if namespace_mode(proc) != LOCAL:
        return None
    return (
        "this network namespace's vsock is in local mode (/proc/sys/net/vsock/ns_mode): "
        "it reaches only listeners and VMs of its own namespace; run the peer in this "
        "namespace, or this command in the peer's"
    )
