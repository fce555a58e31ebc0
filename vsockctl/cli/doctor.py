"""``vsockctl doctor``: why can't I reach that guest, and what fixes it."""

from __future__ import annotations

import click

from vsockctl.discover.doctor import Check, Doctor, Target, first_failure
from vsockctl.discover.system import probe
from vsockctl.discover.vms import GuestNameError, find_guest, guest_route, scan
from vsockctl.events.system import Diagnosis, DoctorCheck
from vsockctl.vsock.address import AddressError, VsockAddress, parse_address, parse_port
from vsockctl.vsock.route import Route

from .app import cli
from .env import Env, current_env
from .options import DURATION, PORT, output_options
from .peer import is_guest_name
from .table import print_paragraph

MARKS = {True: "✓", False: "✗", None: "·"}  # passed, failed, not made


def _target(target: str | None, uds: str | None, port: int | None, listen: bool) -> Target:
    if listen:
        if target is not None or uds is not None or port is None:
            raise click.UsageError("--listen checks a port here: give --port N and no peer")
        return Target(listen_port=port)
    if uds is not None:
        if target is not None or port is None:
            raise click.UsageError("with --uds, give the guest's port with --port, no CID:PORT")
        return Target(Route.hybrid(uds, port))
    if target is None:
        raise click.UsageError("give CID:PORT, NAME:PORT, or --uds PATH --port N")
    name, _, port_text = target.rpartition(":")
    if is_guest_name(name):
        try:
            guest_port = parse_port(port_text)
        except AddressError as exc:
            raise click.BadParameter(str(exc), param_hint="'NAME:PORT'") from exc
        try:
            guest = find_guest(name, scan().guests)
        except GuestNameError as exc:
            return Target(Route(VsockAddress(0, guest_port)), name_error=str(exc))
        return Target(guest_route(guest, guest_port), guest=guest)
    try:
        return Target(Route(parse_address(target)))
    except AddressError as exc:
        raise click.BadParameter(str(exc), param_hint="'CID:PORT'") from exc


def _shown(target: Target) -> str:
    if target.route is None:
        return f"listen on port {target.listen_port}"
    return str(target.route.shown)


def _record(check: Check) -> DoctorCheck:
    return {
        "event": "check",
        "name": check.name,
        "title": check.title,
        "passed": check.passed,
        "seen": check.seen,
        "meaning": check.meaning,
        "fix": check.fix,
        "exit_status": int(check.status),
    }


def _render(env: Env, checks: list[Check]) -> None:
    for check in checks:
        print_paragraph(env, f"{check.title}: {check.seen}", first=f"{MARKS[check.passed]} ",
                        rest="  ")  # fmt: skip
        if check.passed is False:
            if check.meaning:
                print_paragraph(env, check.meaning, first="  means: ", rest="         ")
            if check.fix:
                print_paragraph(env, check.fix, first="  try:   ", rest="         ")
    if first_failure(checks) is None:
        env.out.print("every check passed")


@cli.command("doctor", short_help="Why can't I reach that guest: each link checked, in order.")
@click.argument("target", required=False, metavar="[CID:PORT | NAME:PORT]")
@click.option("--uds", metavar="PATH", help="A hybrid vsock socket (Firecracker ...); with --port.")
@click.option("--port", type=PORT, help="The guest's port with --uds; this port with --listen.")
@click.option("--listen", is_flag=True, help="Instead: can something listen on --port here?")
@click.option("--timeout", type=DURATION, default="5s", show_default=True,
              help="How long the last check waits for the port to accept.")  # fmt: skip
@output_options
def doctor_command(
    target: str | None, uds: str | None, port: int | None, listen: bool, timeout: float
) -> None:
    """Walk the chain from here to a peer and name the first broken link.

    In order: AF_VSOCK; a transport for this route (read from /sys/module:
    vhost_vsock is never autoloaded); conflicting guest transports (VMCI in a
    KVM guest); /dev/vhost-vsock for this user; which VMM owns the CID and
    whether two claim it ('vsockctl vms'); the CID-2 trap (no guest transport,
    so CID 2 lands on this machine's own loopback); the network namespace
    (Linux 7: a listener in another namespace that local mode keeps out of
    reach, found as root); the hybrid socket alive; and last the port
    accepting, the only check that connects. With --listen: whether a socket
    of this namespace already holds the port ('vsockctl ls').

    Each check prints a tick when it passed, a cross when it failed, and a dot
    when it was not made (after a failure); the first failure says what it
    means and what to run. The exit status is the first
    failure's: 3 no vsock or transport for the route, 4 nothing listens
    (or the listener is in another namespace), 5 no answer in time, 1 two VMs
    claiming one CID or a port already held; 0 when every check passed.

    \b
    Examples:
      vsockctl doctor 3:22
      vsockctl doctor myvm:5000
      vsockctl doctor --uds /run/firecracker/v.sock --port 52
      vsockctl doctor --listen --port 5000
      vsockctl doctor 1:7100 --json | jq -r 'select(.passed == false) | .fix'
    """
    env = current_env()
    chosen = _target(target, uds, port, listen)
    needs_guests = chosen.route is not None and chosen.route.uds is None
    doctor = Doctor(
        chosen,
        probe(env.probe_paths, env.socket_factory),
        scan().guests if needs_guests and chosen.name_error is None else [],
        env.socket_factory,
        timeout,
    )
    checks = doctor.run()
    failed = first_failure(checks)
    if env.json:
        for check in checks:
            env.emit(_record(check))
        verdict: Diagnosis = {
            "event": "diagnosis",
            "target": _shown(chosen),
            "passed": failed is None,
            "first_failure": failed.name if failed else None,
            "exit_status": int(failed.status) if failed else 0,
        }
        env.emit(verdict)
    elif not env.quiet:
        _render(env, checks)
    raise click.exceptions.Exit(int(failed.status) if failed else 0)
