"""The guests on this host: VMM processes, what their configuration says, their names.

:func:`scan` walks the processes (psutil) and asks the reader of each VMM it
recognises (:mod:`vsockctl.discover.vmm_sources`); libvirt's status files name the
domains and their CIDs. Nothing is written and nothing is connected to, except
a VMM's own read-only API socket. :func:`find_guest` turns a name into the
guest it names, for addresses like ``myvm:22``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from vsockctl.discover.vmm_sources import Guest, libvirt_domains, reader_for
from vsockctl.vsock.address import VsockAddress
from vsockctl.vsock.route import Route

ProcessTable = Callable[[], Iterable[tuple[int, Sequence[str]]]]


@dataclass
class Scan:
    """What a scan found, and what it skipped and why."""

    guests: list[Guest] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def processes() -> Iterable[tuple[int, Sequence[str]]]:
    """(pid, command line) of every process whose command line can be read."""
    import psutil  # imported on first use: it is slow to load

    for proc in psutil.process_iter():
        try:
            argv = proc.cmdline()
        except (psutil.Error, OSError):  # gone meanwhile, a kernel thread, not ours to read
            continue
        if argv:
            yield proc.pid, argv


def scan(table: ProcessTable | None = None, libvirt_dir: str = "/run/libvirt/qemu") -> Scan:
    """Every guest this host runs (``table``: the processes to look at, default all)."""
    found = Scan()
    for pid, argv in (table or processes)():
        reader = reader_for(argv)
        if reader is None:
            continue
        try:
            result = reader(pid, argv)
        except Exception as exc:  # a reader meeting something new must not end the scan
            found.skipped.append(f"pid {pid} ({argv[0]}): {type(exc).__name__}: {exc}")
            continue
        found.guests += result if isinstance(result, list) else [result]
    _join_vhost_user(found.guests)
    _join_libvirt(found.guests, libvirt_dir)
    return found


def _join_vhost_user(guests: list[Guest]) -> None:
    """A QEMU with a vhost-user-vsock device gets its CID and socket from the backend,
    which then is not listed on its own: they are one VM."""
    backends = {g.backend: g for g in guests if g.vmm == "vhost-device-vsock" and g.backend}
    joined = []
    for guest in guests:
        backend = backends.get(guest.backend) if guest.vmm == "qemu" and guest.backend else None
        if backend is not None and guest.cid is None:
            guest.cid, guest.uds = backend.cid, backend.uds
            guest.source += f"; vhost-device-vsock pid {backend.pid}"
            joined.append(backend)
    guests[:] = [g for g in guests if not any(g is b for b in joined)]


def _join_libvirt(guests: list[Guest], directory: str) -> None:
    """libvirt's domains: the QEMU process they run in takes the domain's name and CID."""
    by_pid = {g.pid: g for g in guests if g.vmm == "qemu"}
    for pid, domain in libvirt_domains(directory):
        qemu = by_pid.get(pid) if pid is not None else None
        if qemu is None:
            guests.append(domain)  # a domain whose QEMU we could not see
            continue
        qemu.vmm, qemu.name = "qemu (libvirt)", domain.name
        if domain.cid is not None:
            qemu.cid, qemu.source = domain.cid, domain.source
        qemu.notes += domain.notes


class GuestNameError(LookupError):
    """A name that names no guest, or more than one; the message says which."""


def find_guest(name: str, guests: Sequence[Guest]) -> Guest:
    """The one guest called ``name`` that vsock reaches (a CID or a hybrid socket)."""
    matches = [g for g in guests if g.name == name and (g.cid is not None or g.uds)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise GuestNameError(
            f"no VM named {name!r} with a vsock device on this host; 'vsockctl vms' lists them"
        )
    listed = ", ".join(f"{g.vmm} pid {g.pid}" for g in matches)
    raise GuestNameError(f"{len(matches)} VMs are named {name!r} ({listed}); give the CID")


def guest_route(guest: Guest, port: int) -> Route:
    """How to reach ``port`` in ``guest``: its hybrid socket, else its CID."""
    if guest.uds:
        return Route.hybrid(guest.uds, port)
    if guest.cid is None:
        raise GuestNameError(f"{guest.name} has no vsock CID or hybrid socket")
    return Route(VsockAddress(guest.cid, port))
