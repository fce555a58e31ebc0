"""``vsockctl vms``: the guests on this host, with their CIDs or hybrid sockets.

Sample::

    VMM           PID   NAME  CID  HYBRID SOCKET    FROM
    qemu         4711   web     3                   command line: -device vhost-vsock-pci,...
    firecracker  4802   fc1     3  /run/fc/v.sock   config file /etc/fc/fc1.json
"""

from __future__ import annotations

import click

from vsockctl.discover.vmm_sources import Guest
from vsockctl.discover.vms import guest_route, scan
from vsockctl.errors import ProtocolError, VsockError, VsockUnavailableError
from vsockctl.events.system import PortCheck, Vm, VmSkipped
from vsockctl.exit_status import ExitStatus

from .app import cli
from .env import Env, current_env
from .errors import port_check
from .format import escape
from .options import PORT, output_options
from .table import Column, Table

PROBE_TIMEOUT = 2.0


def probe_guest(guest: Guest, port: int) -> PortCheck:
    """Does ``guest`` accept on ``port``? With the errno's meaning when not."""
    if guest.cid is None and not guest.uds:
        return {"port": port, "open": False, "error": "no CID or hybrid socket known"}
    try:
        guest_route(guest, port).connect(timeout=PROBE_TIMEOUT).close()
    except (VsockError, ProtocolError, VsockUnavailableError) as exc:
        return port_check(port, exc)
    return port_check(port, None)


def _record(guest: Guest, probed: PortCheck | None) -> Vm:
    record: Vm = {
        "event": "vm",
        "vmm": guest.vmm,
        "pid": guest.pid,
        "name": guest.name,
        "cid": guest.cid,
        "uds": guest.uds,
        "source": guest.source,
        "notes": guest.notes,
    }
    if probed is not None:
        record["probe"] = probed
    return record


@cli.command("vms", short_help="The guests on this host, their CIDs or hybrid sockets.")
@click.option(
    "--probe",
    "probe_port",
    type=PORT,
    metavar="PORT",
    help="Also say whether each guest accepts on PORT (and what the errno means if not).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "openmetrics"]),
    default="table",
    show_default=True,
    help="openmetrics: one sample per guest (and per probe), for node_exporter's "
    "textfile collector.",
)
@output_options
def vms_command(probe_port: int | None, output_format: str) -> None:
    """List the virtual machines on this host and how to reach each over vsock.

    Reads, and only reads, the VMMs' command lines, the config files they name
    and their read-only API sockets:

    \b
      QEMU              -device vhost-vsock-pci,guest-cid=N (or vhost-vsock-device,
                        -ccw, libvirt's JSON -device; vhost-user-vsock through
                        its vhost-device-vsock backend)
      libvirt           /run/libvirt/qemu/DOMAIN.xml: <vsock><cid address='N'/>
      Firecracker       --config-file (vsock.guest_cid, vsock.uds_path), else
                        GET /vm/config on --api-sock
      Cloud Hypervisor  --vsock cid=N,socket=PATH, else GET /api/v1/vm.info
                        on --api-socket
      crosvm            --cid N or --vsock cid=N
      vhost-device-vsock  --vm guest-cid=N,uds-path=PATH
      systemd-vmspawn   --vsock-cid=N

    A VM's name (QEMU -name, the libvirt domain, Firecracker --id or its
    config file's name) works in place of a CID: 'vsockctl connect web:22'.
    For Firecracker and Cloud Hypervisor it stands for the hybrid socket.
    Exit status 0 when VMs were found, 3 when none were.

    \b
    Examples:
      vsockctl vms
      vsockctl vms --probe 22 --json
      vsockctl vms --probe 22 --format openmetrics > /var/lib/node_exporter/vsock.prom.$$ &&
        mv /var/lib/node_exporter/vsock.prom.$$ /var/lib/node_exporter/vsock.prom
    """
    env = current_env()
    if output_format == "openmetrics" and env.json:
        raise click.UsageError("give --json or --format openmetrics, not both")
    found = scan()
    records = [
        _record(guest, probe_guest(guest, probe_port) if probe_port is not None else None)
        for guest in found.guests
    ]
    if output_format == "openmetrics":
        from vsockctl.metrics.vms import guests_text

        up = [bool(r.get("probe", {}).get("open")) for r in records]
        env.stdout.write(guests_text(found.guests, probe_port, up))
        env.stdout.flush()
        return
    if env.json:
        for record in records:
            env.emit(record)
        for note in found.skipped:
            env.emit(VmSkipped(event="vm_skipped", error=note))
    else:
        _table(env, records, probe_port)
        for note in found.skipped:
            env.message(f"skipped {note}")
    if not found.guests:
        env.message(
            "no VMs found (none of QEMU, libvirt, Firecracker, Cloud Hypervisor, "
            "crosvm, vhost-device-vsock or systemd-vmspawn runs here)"
        )
        raise click.exceptions.Exit(int(ExitStatus.VSOCK_UNAVAILABLE))


def _table(env: Env, records: list[Vm], probe_port: int | None) -> None:
    if not records:
        return
    columns: list[Column | str] = ["VMM", "PID", "NAME", "CID", "HYBRID SOCKET"]
    columns.append(Column("FROM", optional=True))
    if probe_port is not None:
        columns.insert(4, Column(f"PORT {probe_port}", wrap=True))
    table = Table(*columns)
    for r in records:
        row = [r["vmm"], str(r["pid"] or "?"), r["name"], "" if r["cid"] is None else str(r["cid"])]
        if probe_port is not None:
            probed = r["probe"]
            row.append("open" if probed["open"] else probed["error"])
        row += [r["uds"] or "", r["source"] or "; ".join(r["notes"]) or "?"]
        table.add_row(*(escape(cell) for cell in row))
    table.print(env)
