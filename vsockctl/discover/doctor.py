"""``doctor``: walk the chain from this socket to a peer and name the first broken link.

Each check says what it saw; a failed one says what that means and the command
that fixes it, and has the exit status the failure would have had. Checks
after the first failure are not made (their premises are gone): in particular
nothing is connected to when the route itself is wrong. Read-only but for the
last check, which connects once to the port asked about (or, for a listener,
asks sock_diag who holds the port).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vsockctl.discover.diag import dump, with_owners
from vsockctl.discover.netns import find
from vsockctl.discover.system import SystemInfo
from vsockctl.discover.vmm_sources import Guest
from vsockctl.errors import ProtocolError, VsockError, VsockUnavailableError
from vsockctl.exit_status import ExitStatus, exit_status_for
from vsockctl.vsock.constants import VMADDR_CID_HOST, VMADDR_CID_LOCAL
from vsockctl.vsock.hybrid import check_uds
from vsockctl.vsock.route import Route
from vsockctl.vsock.sockets import SocketFactory

GUEST_TRANSPORTS = ("virtio", "vmci", "hyperv")  # the guest-to-host slot takes one
UNAVAILABLE = ExitStatus.VSOCK_UNAVAILABLE


@dataclass(frozen=True)
class Check:
    """One link of the chain: passed, failed, or not made (``passed`` None)."""

    name: str
    title: str
    passed: bool | None
    seen: str
    meaning: str | None = None
    fix: str | None = None
    status: ExitStatus = ExitStatus.OK


@dataclass(frozen=True)
class Target:
    """What to check: a route to a peer, or (``listen_port``) a port to listen on."""

    route: Route | None = None
    listen_port: int | None = None
    guest: Guest | None = None  # the VM a name stood for
    name_error: str | None = None  # a name that named no VM (or several)


@dataclass
class Doctor:
    target: Target
    info: SystemInfo
    guests: list[Guest]
    factory: SocketFactory = socket.socket
    timeout: float = 5.0

    def run(self) -> list[Check]:
        """Every check in order; after the first failure, the rest are not made."""
        done: list[Check] = []
        for name, title, make in self._plan():
            if any(c.passed is False for c in done):
                done.append(Check(name, title, None, "not checked"))
            else:
                done.append(make())
        return done

    def _plan(self) -> list[tuple[str, str, Callable[[], Check]]]:
        """The checks for this target, in order, as (name, title, how to make it)."""
        target, info = self.target, self.info
        plan: list[tuple[str, str, Callable[[], Check]]] = [
            ("af_vsock", "AF_VSOCK", self._af_vsock)
        ]
        if target.name_error is not None:  # a name that names no VM: nothing else to check
            return [*plan, ("vmm", "which VMM owns the CID", lambda: self._owner(0))]
        route = target.route
        if route is not None and route.uds is not None:
            return [*plan, ("hybrid", "hybrid socket", lambda: self._hybrid(route)),
                    ("port", "port accepting", lambda: self._port(route))]  # fmt: skip
        cid = route.address.cid if route is not None else None
        plan += [("transport", "transport", lambda: self._transport(cid)),
                 ("conflicts", "conflicting transports", self._conflicts)]  # fmt: skip
        if cid is not None and cid > VMADDR_CID_HOST:
            plan += [("device", "device permissions", self._device),
                     ("vmm", "which VMM owns the CID", lambda: self._owner(cid))]  # fmt: skip
        if cid == VMADDR_CID_HOST:
            plan.append(("cid2", "CID 2 reaches a host", self._cid2_trap))
        if info.sysctl("ns_mode") is not None:
            plan.append(("namespace", "network namespace", lambda: self._namespace(target)))
        if route is not None:
            plan.append(("port", "port accepting", lambda: self._port(route)))
        elif target.listen_port is not None:
            port = target.listen_port
            plan.append(("held", "port free to listen on", lambda: self._held(port)))
        return plan

    def _af_vsock(self) -> Check:
        if self.info.af_vsock:
            return Check(
                "af_vsock", "AF_VSOCK", True, f"socket(AF_VSOCK) works ({self.info.kernel})"
            )
        return Check(
            "af_vsock", "AF_VSOCK", False, "socket(AF_VSOCK) fails",
            "this kernel has no vsock: the vsock module is not loaded or not built",
            self.info.load_hint("vsock"), UNAVAILABLE,
        )  # fmt: skip

    def _loaded(self, *names: str) -> list[str]:
        return [t.name for t in self.info.transports if t.name in names and t.available]

    def _transport(self, cid: int | None) -> Check:
        title = "transport"
        if cid is None:  # a listener: any transport carries connections to it
            have = self._loaded("loopback", "vhost", *GUEST_TRANSPORTS)
            if have:
                return Check("transport", title, True, f"loaded: {', '.join(have)}")
            return Check(
                "transport", title, False, "no transport loaded",
                "nothing can carry a connection to a listener here",
                "modprobe vmw_vsock_virtio_transport (in a KVM guest), vhost_vsock (on a "
                "KVM host) or vsock_loopback (CID 1)", UNAVAILABLE,
            )  # fmt: skip
        wanted: tuple[str, ...]
        if cid == VMADDR_CID_LOCAL:
            wanted, module, what = ("loopback",), "vsock_loopback", "CID 1 is carried by loopback"
        elif cid == VMADDR_CID_HOST:
            wanted, module, what = (
                GUEST_TRANSPORTS,
                "vmw_vsock_virtio_transport",
                ("CID 2 (the host) is reached through a guest transport"),
            )
        else:
            wanted, module, what = (
                ("vhost", "vmci"),
                "vhost_vsock",
                (f"CID {cid} (a guest) is reached through a host transport"),
            )
            fallback = self.info.sysctl("g2h_fallback") == "1"
            if not self._loaded(*wanted) and fallback and self._loaded(*GUEST_TRANSPORTS):
                return Check("transport", title, True, f"{what}; none is loaded, and "
                             "g2h_fallback=1 sends it to the host above instead")  # fmt: skip
        have = self._loaded(*wanted)
        if have:
            return Check("transport", title, True, f"{what}: {', '.join(have)} loaded")
        if cid == VMADDR_CID_HOST and self._loaded("loopback"):  # the trap, checked below
            return Check("transport", title, True, f"{what}: none is loaded, so loopback takes it")
        state = self.info.modules.get(module, "unknown")
        return Check(
            "transport", title, False, f"{what}, and none is loaded ({module}: {state})",
            "no transport can carry this route, so every connect fails with ENODEV",
            self.info.load_hint(module), UNAVAILABLE,
        )  # fmt: skip

    def _conflicts(self) -> Check:
        guests = self._loaded(*GUEST_TRANSPORTS)
        if len(guests) <= 1:
            return Check("conflicts", "conflicting transports", True,
                         f"guest transports loaded: {', '.join(guests) or 'none'}")  # fmt: skip
        rest = guests[1:]  # the first loaded keeps the slot
        modules = {t.name: t.module for t in self.info.transports}
        return Check(
            "conflicts", "conflicting transports", False,
            f"{len(guests)} guest transports loaded: {', '.join(guests)}",
            "only one guest transport serves CID 2; the one loaded first takes the slot "
            "(VMCI in a KVM guest keeps virtio from reaching the host)",
            "modprobe -r " + " ".join(modules[name] for name in rest if name != "virtio")
            if "virtio" in guests else f"modprobe -r {modules[rest[0]]}",
            UNAVAILABLE,
        )  # fmt: skip

    def _device(self) -> Check:
        path = Path("/dev/vhost-vsock")
        if not self._loaded("vhost"):
            return Check("device", "device permissions", True,
                         "/dev/vhost-vsock not needed here (no vhost_vsock)")  # fmt: skip
        if os.access(path, os.R_OK | os.W_OK):
            return Check("device", "device permissions", True, f"{path}: read-write for this user")
        return Check(
            "device", "device permissions", False,
            f"{path}: {'not accessible to this user' if path.exists() else 'absent'}",
            "a VMM running as this user cannot give its guest a vsock device",
            f"run the VMM as root, or: chmod 0660 {path}; chgrp kvm {path}", UNAVAILABLE,
        )  # fmt: skip

    def _owner(self, cid: int) -> Check:
        if self.target.name_error is not None:
            return Check("vmm", "which VMM owns the CID", False, self.target.name_error,
                         "the name is not a VM this host runs", "vsockctl vms",
                         UNAVAILABLE)  # fmt: skip
        owners = [g for g in self.guests if g.cid == cid]
        if not owners:
            return Check(
                "vmm", "which VMM owns the CID", False, f"no VM on this host has CID {cid}",
                "a connect to it fails with ENODEV (or goes to the host above when "
                "g2h_fallback=1)", "vsockctl vms (the guests and their CIDs)", UNAVAILABLE,
            )  # fmt: skip
        said = "; ".join(f"{g.vmm} pid {g.pid} ({g.name})" for g in owners)
        if len(owners) > 1:
            return Check(
                "vmm", "which VMM owns the CID", False,
                f"{len(owners)} VMMs claim CID {cid}: {said}",
                "one CID per host: only the first VM's device got it, the others "
                "failed to start it or the configuration is stale",
                "give each VM its own CID (QEMU: -device vhost-vsock-pci,guest-cid=N)",
                ExitStatus.ERROR,
            )  # fmt: skip
        return Check("vmm", "which VMM owns the CID", True, said)

    def _cid2_trap(self) -> Check:
        if self._loaded(*GUEST_TRANSPORTS) or not self._loaded("loopback"):
            return Check("cid2", "CID 2 reaches a host", True, "a guest transport carries CID 2")
        return Check(
            "cid2", "CID 2 reaches a host", False,
            "no guest transport, but vsock_loopback is loaded",
            "CID 2 lands on this machine's own loopback: a listener here answers, not the host",
            "modprobe vmw_vsock_virtio_transport (in a KVM guest), or address CID 1 for "
            "this machine", UNAVAILABLE,
        )  # fmt: skip

    def _namespace(self, target: Target) -> Check:
        mode = self.info.sysctl("ns_mode")
        title = "network namespace"
        port = target.route.address.port if target.route else None
        if target.route is None or target.route.address.cid != VMADDR_CID_LOCAL:
            return Check("namespace", title, True, f"this namespace is in {mode} mode")
        if _listener(port, self.factory) is not None:
            return Check("namespace", title, True, f"{mode} mode; port {port} listens here")
        elsewhere, complete = find(lambda: _listener(port, self.factory))
        unreachable = [(n, h) for n, h in elsewhere if mode == "local" or n.mode == "local"]
        if not unreachable:
            seen = f"{mode} mode; port {port} listens in no other namespace"
            return Check("namespace", title, True, seen + ("" if complete else
                         " that could be looked into (it takes root)"))  # fmt: skip
        there, (holder, pid) = unreachable[0]
        return Check(
            "namespace", title, False,
            f"port {port} listens in another network namespace ({holder} there, "
            f"{there.mode} mode); this one is in {mode} mode",
            "a namespace in local mode reaches only its own listeners, and only they reach it",
            f"nsenter -n -t {pid or there.pid} vsockctl ... (run it in the listener's namespace)",
            ExitStatus.CONNECTION_REFUSED,
        )  # fmt: skip

    def _hybrid(self, route: Route) -> Check:
        assert route.uds is not None
        state = check_uds(route.uds)
        if state.accepting:
            return Check("hybrid", "hybrid socket", True, f"{route.uds}: a VMM accepts on it")
        seen = ("does not exist" if not state.exists else
                "is not a Unix socket" if not state.socket else "nobody accepts on it")  # fmt: skip
        return Check(
            "hybrid", "hybrid socket", False, f"{route.uds} {seen}",
            "the VMM behind this socket is gone, or this is not its vsock socket "
            "(Firecracker's uds_path, Cloud Hypervisor's --vsock socket=)",
            "start the VM, or find its socket: vsockctl vms", UNAVAILABLE,
        )  # fmt: skip

    def _port(self, route: Route) -> Check:
        title = "port accepting"
        try:
            route.connect(timeout=self.timeout, factory=self.factory).close()
        except (VsockError, VsockUnavailableError, ProtocolError) as exc:
            meaning = getattr(exc, "meaning", None)
            nobody = isinstance(exc, VsockError) and exc.errno in (
                errno.ECONNRESET,
                errno.ECONNREFUSED,
            )
            return Check(
                "port", title, False, str(exc) if isinstance(exc, VsockError)
                else f"connect {route.shown}: {exc}",
                meaning.cause if meaning else str(exc),
                f"start the listener: vsockctl listen --port {route.address.port}"
                if nobody else (meaning.hint if meaning else None), exit_status_for(exc),
            )  # fmt: skip
        return Check("port", title, True, f"connect {route.shown}: accepted")

    def _held(self, port: int) -> Check:
        title = "port free to listen on"
        try:
            holders = [s for s in with_owners(dump(self.factory)) if s.local.port == port]
        except (VsockError, VsockUnavailableError) as exc:
            return Check("held", title, False, f"sock_diag: {exc}", "'vsockctl ls' cannot work",
                         "modprobe vsock_diag", exit_status_for(exc))  # fmt: skip
        if not holders:
            return Check("held", title, True, "no socket of this namespace holds it")
        who = ", ".join(f"{o.name or '?'}[{o.pid}]" for s in holders for o in s.owners) or "?"
        return Check(
            "held", title, False, f"held by {who} ({holders[0].state_name})",
            "a listener there gets EADDRINUSE", f"vsockctl ls --port {port}; stop it, or "
            "choose another port", ExitStatus.ERROR,
        )  # fmt: skip


def _listener(port: int | None, factory: SocketFactory) -> tuple[str, int | None] | None:
    """Who listens on ``port`` in the current thread's namespace: "name[pid]" and the
    pid (None: nobody; "?" when its process cannot be seen)."""
    try:
        found = [s for s in dump(factory) if s.listening and s.local.port == port]
    except (VsockError, VsockUnavailableError):
        return None
    if not found:
        return None
    owners = [o for s in with_owners(found) for o in s.owners]
    if not owners:
        return "?", None
    return f"{owners[0].name or '?'}[{owners[0].pid}]", owners[0].pid


def first_failure(checks: list[Check]) -> Check | None:
    return next((c for c in checks if c.passed is False), None)
