"""How a command reaches its peer: one option bundle, one value.

``@peer_options`` adds ``--timeout``, ``--retry``, ``--retry-delay``, ``--uds`` and
``--to-host`` to a command and hands the command one :class:`PeerOptions`;
:meth:`PeerOptions.route` turns it and the peer's address into the
:class:`~vsockctl.vsock.route.Route` the core takes. Listening commands get
``--uds`` alone and :func:`listen_route`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vsockctl.vsock.address import AddressError, VsockAddress, parse_address, parse_cid, parse_port
from vsockctl.vsock.constants import VMADDR_FLAG_TO_HOST, VMADDR_PORT_ANY
from vsockctl.vsock.route import Route
from vsockctl.vsock.sockets import SocketType

if TYPE_CHECKING:
    from vsockctl.discover.vmm_sources import Guest

from .options import DURATION, WholeRange, given

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class PeerOptions:
    """``--timeout``, ``--retry``, ``--retry-delay``, ``--uds`` and ``--to-host``."""

    timeout: float
    retry: int
    retry_delay: float
    uds: str | None
    to_host: bool

    def route(self, target: str | None, cid: int | None, port: int | None) -> Route:
        """The peer from ``CID:PORT`` or from ``--cid``/``--port`` (not both).

        With ``--uds`` only the guest's port counts (``PORT``, or ``--port``);
        with ``--to-host`` the address carries ``VMADDR_FLAG_TO_HOST``.
        """
        if self.uds is not None and self.to_host:
            raise click.UsageError("--to-host is for vsock addresses; --uds goes through a VMM")
        if self.uds is not None:
            if cid is not None:
                raise click.UsageError("--uds takes the place of the CID; give only the port")
            if target is not None:
                if port is not None:
                    raise click.UsageError("give PORT or --port, not both")
                cid_text, colon, port_text = target.rpartition(":")
                if colon and cid_text:
                    raise click.UsageError(
                        f"with --uds the VMM's socket stands for the CID: give only the port "
                        f"({port_text}), not {target}"
                    )
                try:
                    port = parse_port(port_text)
                except AddressError as exc:
                    raise click.BadParameter(str(exc), param_hint="'PORT'") from exc
            if port is None:
                raise click.UsageError("with --uds, give the guest's port (PORT or --port)")
            return Route.hybrid(self.uds, port)
        if target is not None and cid is None and port is None:
            name, _, port_text = target.rpartition(":")
            ssh = self._ssh_form(name, port_text)
            if ssh is not None:
                return ssh
            guest = guest_named(name)
            if guest is not None:
                return self.to_guest(guest, _port(port_text, "'CID:PORT'"))
        address = _resolve_vsock(target, cid, port)
        if self.to_host:
            address = VsockAddress(address.cid, address.port, VMADDR_FLAG_TO_HOST)
        return Route(address)

    def to_guest(self, guest: Guest, port: int) -> Route:
        """``port`` in a VM found by name: its hybrid socket, or its CID."""
        if self.to_host:
            raise click.UsageError("--to-host is for CIDs; a VM's name reaches that VM")
        from vsockctl.discover.vms import guest_route

        return guest_route(guest, port)

    def _ssh_form(self, host: str, port_text: str) -> Route | None:
        """systemd's ssh host forms, as ``ProxyCommand='vsockctl connect %h:%p'`` gets
        them: vsock/CID, vsock%CID, vsock-mux/PATH (a hybrid socket), machine/NAME."""
        scheme, slash, rest = host.partition("/")
        if not slash and host.startswith("vsock%"):
            scheme, rest = "vsock", host.removeprefix("vsock%")
        elif not slash or not rest:
            return None
        if scheme in ("vsock", "machine"):  # a CID, or a VM's name
            return self.route(f"{rest}:{port_text}", None, None)
        if scheme == "vsock-mux":  # as systemd-ssh-proxy: absolute unless it starts with ./
            path = rest if rest.startswith(("/", "./")) else f"/{rest}"
            return Route.hybrid(path, _port(port_text, "'vsock-mux/PATH:PORT'"))
        return None


def is_guest_name(text: str) -> bool:
    """Whether ``text`` names a VM rather than a CID: numbers, -1 and hex are CIDs
    (with the CID's own error when bad), and so are any, host, local, hypervisor."""
    if not text or not (text[0].isalpha() or text[0] == "_"):
        return False
    try:
        parse_cid(text)
    except AddressError:
        return True
    return False


def guest_named(text: str) -> Guest | None:
    """The VM on this host called ``text`` ('vsockctl vms'), or None when ``text`` is a
    CID (a number is always a CID, never a name) or empty."""
    if not is_guest_name(text):
        return None
    from vsockctl.discover.vms import GuestNameError, find_guest, scan

    try:
        return find_guest(text, scan().guests)
    except GuestNameError as exc:
        raise click.BadParameter(str(exc), param_hint="'CID'") from exc


def _port(text: str, hint: str) -> int:
    try:
        return parse_port(text)
    except AddressError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from exc


def _resolve_vsock(target: str | None, cid: int | None, port: int | None) -> VsockAddress:
    if target is not None:
        if cid is not None or port is not None:
            raise click.UsageError("give CID:PORT or --cid/--port, not both")
        try:
            return parse_address(target)
        except AddressError as exc:
            raise click.BadParameter(str(exc), param_hint="'CID:PORT'") from exc
    if cid is None or port is None:
        raise click.UsageError("give CID:PORT, or both --cid and --port")
    return VsockAddress(cid, port)


def listen_route(cid: int, port: int, uds: str | None, sock_type: SocketType) -> Route:
    """Where a listening command waits: CID:PORT, or with ``--uds`` the socket PATH_PORT."""
    if uds is None:
        return Route(VsockAddress(cid, port))
    if sock_type is not SocketType.STREAM:
        raise click.UsageError("hybrid vsock (--uds) carries streams only")
    if port == VMADDR_PORT_ANY:
        raise click.UsageError("with --uds, give a port number (the guest connects to CID 2 PORT)")
    return Route.hybrid(uds, port)


_PEER_OPTIONS = [
    click.option(
        "--timeout",
        type=DURATION,
        default="5s",
        show_default=True,
        help="Give up connecting after this long (sets the vsock connect timeout too).",
    ),
    click.option(
        "--retry",
        type=WholeRange(min=0),
        default=0,
        show_default=True,
        metavar="N",
        help="Try N more times while nothing listens yet (a guest still booting).",
    ),
    click.option(
        "--retry-delay",
        type=DURATION,
        default="1s",
        show_default=True,
        help="Pause between attempts with --retry.",
    ),
    click.option(
        "--uds",
        metavar="PATH",
        type=click.Path(dir_okay=False),
        help="Hybrid vsock (Firecracker, Cloud Hypervisor): connect through the VMM's Unix "
        "socket PATH ('CONNECT PORT') instead of a CID; give only the guest's port.",
    ),
    click.option(
        "--to-host",
        is_flag=True,
        help="Set VMADDR_FLAG_TO_HOST: route to the host even where a host-side transport "
        "is loaded (nested VMs; Linux 5.10+).",
    ),
]
_PEER_NAMES = ("timeout", "retry", "retry_delay", "uds", "to_host")


def peer_options(func: F) -> F:
    """The options of :class:`PeerOptions`, handed to ``func`` as its ``peer`` argument."""

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        peer = PeerOptions(**{name: kwargs.pop(name) for name in _PEER_NAMES})
        if given("retry_delay") and not peer.retry:
            raise click.UsageError("--retry-delay is the pause between --retry attempts")
        return func(*args, peer=peer, **kwargs)

    for option in reversed(_PEER_OPTIONS):
        command = option(command)
    return command  # type: ignore[return-value]


def uds_listen_option(func: F) -> F:
    """``--uds PATH`` for commands that listen: a guest's CID 2 port P arrives on PATH_P."""

    return click.option(
        "--uds",
        metavar="PATH",
        type=click.Path(dir_okay=False),
        help="Hybrid vsock (Firecracker, Cloud Hypervisor): listen on the Unix socket "
        "PATH_PORT, where the VMM delivers a guest's connections to CID 2 PORT. "
        "The socket file is removed at exit.",
    )(func)
