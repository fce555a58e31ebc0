"""Setting vsock socket options on real sockets, with their real C widths, and
reading back what the kernel made of them (see :mod:`vsockctl.vsock.sockopts` for the
options themselves)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vsockctl.errors import Operation, VsockError
from vsockctl.vsock import _libc
from vsockctl.vsock.constants import AF_VSOCK
from vsockctl.vsock.sockets import SocketFactory
from vsockctl.vsock.sockopts import CType, Notation, Setting, SockOpt, Value, lookup


def get_option(sock: socket.socket, opt: SockOpt) -> Value:
    """Read ``opt`` from ``sock`` with its real width."""
    try:
        raw = _libc.getsockopt(sock.fileno(), opt.level, opt.number, opt.ctype.width)
    except OSError as exc:
        raise VsockError.wrap(exc, Operation.GETSOCKOPT, option=opt.name) from exc
    if len(raw) != opt.ctype.width:
        raise VsockError(
            errno.EINVAL, Operation.GETSOCKOPT, None, "unexpected width", option=opt.name
        )
    return opt.ctype.unpack(raw)


def set_option(sock: socket.socket, opt: SockOpt, value: Value) -> None:
    """Write ``opt`` on ``sock`` with its real width."""
    try:
        if opt.ctype is CType.U64 and opt.level == AF_VSOCK:
            # CPython passes an AF_VSOCK option as 8 bytes: this one's width; no ctypes.
            sock.setsockopt(opt.level, opt.number, int(value))
        else:
            _libc.setsockopt(sock.fileno(), opt.level, opt.number, opt.ctype.pack(value))
    except OSError as exc:
        raise VsockError.wrap(exc, Operation.SETSOCKOPT, option=opt.name) from exc


@dataclass(frozen=True)
class Applied:
    """What was asked for an option and what the kernel made of it (or its refusal)."""

    setting: Setting
    effective: Value | None
    note: str | None = None
    error: VsockError | None = None

    @property
    def changed(self) -> bool:
        return self.error is None and self.effective != self.setting.value


Reporter = Callable[[list["Applied"]], None]


def order(settings: Iterable[Setting]) -> list[Setting]:
    """The order that works: buffer limits first, then everything else as given."""
    settings = list(settings)
    return [s for s in settings if s.option.limits] + [s for s in settings if not s.option.limits]


def apply(sock: socket.socket, settings: Sequence[Setting], strict: bool = True) -> list[Applied]:
    """Set each option (in :func:`order`), then read every one back.

    ``strict`` raises :class:`VsockError` for the first option the kernel
    refuses; otherwise each refusal is kept in its :class:`Applied`.
    """
    ordered = order(settings)
    errors: dict[int, VsockError] = {}
    for index, setting in enumerate(ordered):
        try:
            set_option(sock, setting.option, setting.value)
        except VsockError as exc:
            if strict:
                raise
            errors[index] = exc
    return [
        Applied(setting, None, None, errors[index])
        if index in errors
        else _read_back(sock, setting)
        for index, setting in enumerate(ordered)
    ]


def _read_back(sock: socket.socket, setting: Setting) -> Applied:
    opt = setting.option
    effective = get_option(sock, opt)
    if effective == setting.value:
        return Applied(setting, effective)
    note: str | None = "the kernel changed it"
    if opt.name == "buffer-size":
        low = get_option(sock, lookup("buffer-min-size"))
        high = get_option(sock, lookup("buffer-max-size"))
        note = f"clamped into [buffer-min-size, buffer-max-size] = [{low}, {high}]"
        if setting.value > high:
            note += "; raise buffer-max-size too"
    elif opt.name in ("sndbuf", "rcvbuf"):
        note = "the kernel doubles it for bookkeeping, within net.core limits"
    elif opt.notation is Notation.BOOL and bool(effective) == bool(setting.value):
        note = None
    return Applied(setting, effective, note)


def configured(
    factory: SocketFactory,
    settings: Sequence[Setting],
    report: Reporter,
    defaults: Sequence[Setting] = (),
) -> SocketFactory:
    """A socket factory whose sockets get ``settings`` applied (strictly) as they are made.

    ``defaults`` apply too, unless ``settings`` name the same option; the
    kernel may refuse a default (it is then left as the kernel had it), but
    not a setting. ``report`` hears what the kernel made of them, once:
    retries and probes make many sockets with the same result.
    """
    named = {s.option.name for s in settings}
    wanted = order([*(d for d in defaults if d.option.name not in named), *settings])
    reported = False

    def make(*args: Any, **kwargs: Any) -> socket.socket:
        nonlocal reported
        sock = factory(*args, **kwargs)
        # The family asked for: reading sock.family builds an enum, and forward
        # makes a socket per connection.
        if kwargs.get("family", args[0] if args else None) != AF_VSOCK or not wanted:
            return sock
        try:
            if reported:  # the sockets after the first only set, in the same order
                for setting in wanted:
                    try:
                        set_option(sock, setting.option, setting.value)
                    except VsockError:
                        if setting in settings:
                            raise
                return sock
            applied = apply(sock, wanted, strict=False)
            refused = next((a for a in applied if a.error and a.setting in settings), None)
            if refused is not None and refused.error is not None:
                raise refused.error
        except BaseException:
            sock.close()
            raise
        reported = True
        report([a for a in applied if a.error is None or a.setting in settings])
        return sock

    return make


@dataclass(frozen=True)
class SocketOptions:
    """The options a command sets on each vsock socket it makes: the user's
    ``settings`` (``--sockopt``, which must hold) over the command's own
    ``defaults`` (which the kernel may refuse)."""

    settings: tuple[Setting, ...] = ()
    defaults: tuple[Setting, ...] = ()

    def without_defaults(self) -> SocketOptions:
        return SocketOptions(self.settings)

    def factory(self, base: SocketFactory, report: Reporter) -> SocketFactory:
        """Sockets from ``base`` with these options set; ``report`` hears what the
        kernel made of them, once (see :func:`configured`)."""
        return configured(base, self.settings, report, self.defaults)
