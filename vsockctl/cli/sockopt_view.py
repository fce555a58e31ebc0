"""How applied socket options show: a table, -v lines, or JSON events."""

from __future__ import annotations

from vsockctl.events.system import Sockopt
from vsockctl.vsock.sockets import SocketFactory
from vsockctl.vsock.sockopt_apply import Applied, SocketOptions
from vsockctl.vsock.sockopts import format_value, json_value

from .env import Env
from .format import escape
from .table import Column, Table


def applied_record(applied: Applied) -> Sockopt:
    setting, opt = applied.setting, applied.setting.option
    record: Sockopt = {
        "event": "sockopt",
        "name": opt.name,
        "requested": json_value(opt, setting.value),
        "requested_text": setting.text,
        "effective": json_value(opt, applied.effective),
        "changed": applied.changed,
        "note": applied.note,
    }
    if applied.error is not None:
        meaning = applied.error.meaning
        record["errno"] = applied.error.errno
        record["errno_name"] = meaning.name
        record["meaning"] = meaning.cause
    return record


def effective_text(applied: Applied) -> str:
    if applied.error is not None:
        return f"{applied.error.meaning.name}: {applied.error.meaning.cause}"
    assert applied.effective is not None
    return format_value(applied.setting.option, applied.effective)


def vsock_factory(env: Env, options: SocketOptions) -> SocketFactory:
    """The command's sockets, with ``options`` set on each vsock one as it is made and
    what the kernel made of them reported once. Make it once per command."""
    return options.factory(
        env.socket_factory, lambda applied: report_applied(env, options, applied)
    )


def report_applied(env: Env, options: SocketOptions, applied: list[Applied]) -> None:
    """What ``--sockopt`` did, in ``-v`` lines on stderr or ``--json`` events."""
    for item in applied:
        if env.json:
            env.emit(applied_record(item))
        elif item.changed and item.setting in options.settings and not (env.quiet or env.verbose):
            env.message(  # the user's own setting did not hold as given: always said
                f"vsockctl: note: sockopt {item.setting}: the kernel made it "
                f"{effective_text(item)}" + (f" ({item.note})" if item.note else "")
            )
        elif env.verbose and not env.quiet:
            note = f" ({item.note})" if item.note else ""
            env.stderr.write(
                f"sockopt {item.setting.option.name}: requested {item.setting.text}, "
                f"effective {effective_text(item)}{note}\n"
            )
            env.stderr.flush()


def applied_table(applied: list[Applied]) -> Table:
    table = Table("option", "requested", "effective", Column("note", wrap=True))
    for item in applied:
        style = "red" if item.error else ("yellow" if item.changed else "green")
        table.add_row(
            item.setting.option.name,
            item.setting.text,
            f"[{style}]{escape(effective_text(item))}[/]",
            escape(item.note or ("" if item.error is None else item.error.meaning.hint or "")),
        )
    return table
