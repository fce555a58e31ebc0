"""Tables that never cut a name, at 60 and 80 columns on a terminal and piped (issue 25).

The terminal is real: ``script`` runs vsockctl on a pseudo-terminal of the width
asked for. Piped output is what grep and awk get.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import Invoke
from tests.peers import vsockctl_args
from vsockctl.cli.env import Env, Streams
from vsockctl.cli.table import Column, Table
from vsockctl.vsock.sockopts import OPTIONS

ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


def on_terminal(args: list[str], columns: int, stderr: bool = False) -> list[str]:
    """vsockctl ARGS on a pseudo-terminal ``columns`` wide: its lines, colours removed
    (with ``stderr``, its progress redrawn on each carriage return, as lines too)."""
    if shutil.which("script") is None:
        pytest.skip("needs script(1) (util-linux) for a terminal")
    command = " ".join(vsockctl_args(*args))
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "50", "TERM": "xterm"}
    result = subprocess.run(
        ["script", "-qec", command, "/dev/null"], capture_output=True, env=env, timeout=60
    )
    text = ANSI.sub("", result.stdout.decode()).replace("\r", "\n" if stderr else "")
    return text.splitlines()


NAMES = [opt.name for opt in OPTIONS] + [n for opt in OPTIONS for n in (opt.linux, opt.vmci) if n]


@pytest.mark.parametrize("columns", [60, 80])
def test_sockopt_list_fits_a_terminal_and_cuts_no_name(columns: int) -> None:
    lines = on_terminal(["sockopt", "list"], columns)
    assert max(len(line) for line in lines) <= columns, lines
    words = {word for line in lines for word in line.split()}
    assert set(NAMES) <= words, set(NAMES) - words
    assert not any("…" in line for line in lines)


@pytest.mark.parametrize("columns", [60, 80])
def test_info_cuts_no_module_name_at_any_width(columns: int) -> None:
    lines = on_terminal(["info"], columns)
    words = {word for line in lines for word in line.split()}
    assert {"vmw_vsock_virtio_transport", "vmw_vsock_vmci_transport", "vsock_loopback"} <= words
    assert not any("…" in line for line in lines)


@pytest.mark.parametrize("args", [["sockopt", "list"], ["info"]], ids=" ".join)
def test_piped_tables_are_plain_whole_rows_without_trailing_spaces(
    invoke: Invoke, args: list[str]
) -> None:
    lines = invoke(args).stdout.splitlines()
    assert lines and all(line == line.rstrip() for line in lines)
    assert not any("\x1b" in line or "…" in line for line in lines)
    if args[0] == "sockopt":  # one row per option, its names on it
        for opt in OPTIONS:
            (row,) = [line for line in lines if line.split()[:1] == [opt.name]]
            assert all(name in row.split() for name in (opt.linux, opt.vmci) if name)


def render(table: Table, width: int | None) -> list[str]:
    """``table`` as printed on a terminal ``width`` wide (None: piped)."""
    from rich.console import Console

    out = io.StringIO()
    env = Env(streams=Streams(io.BytesIO(), io.BytesIO(), io.StringIO(), False, width is not None))
    env._consoles["out"] = Console(file=out, width=width or 80, force_terminal=False)
    table.print(env)
    return out.getvalue().splitlines()


def sample() -> Table:
    table = Table(
        "name",
        "number",
        Column("free text", wrap=True),
        Column("extra", optional=True),
    )
    table.add_row("a-very-long-name-that-must-stay-whole", "4294967295", "word " * 20, "x" * 30)
    table.add_row("short", "1", "", "")
    return table


def test_free_text_wraps_then_optional_columns_fold_and_names_stay_whole() -> None:
    wide = render(sample(), 200)
    assert len(wide) == 3 and "extra" in wide[0]  # all fits: one line a row
    narrow = render(sample(), 70)
    assert max(len(line) for line in narrow) <= 70, narrow
    assert "a-very-long-name-that-must-stay-whole" in narrow[1]
    assert "4294967295" in narrow[1]
    assert any(line.strip() == f"extra: {'x' * 30}" for line in narrow)  # folded, whole
    assert sum("word" in line for line in narrow) > 1  # wrapped
    assert " ".join(" ".join(narrow).split()).count("word") == 20  # none lost


def test_a_table_whose_names_cannot_fit_keeps_them_whole() -> None:
    lines = render(sample(), 30)
    assert "a-very-long-name-that-must-stay-whole" in lines[1]


def test_piped_tables_never_wrap_or_fold() -> None:
    lines = render(sample(), None)
    assert len(lines) == 3
    assert lines[1].split()[:2] == ["a-very-long-name-that-must-stay-whole", "4294967295"]
    assert lines[1].endswith("x" * 30) and lines[2] == lines[2].rstrip()
