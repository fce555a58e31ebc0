"""Tables that never cut a name: aligned columns, free text wrapped, extras folded.

Names and numbers (a column made with ``wrap=False``, the default) are always
shown whole. On a terminal too narrow for a row, free-text columns wrap
first; then optional columns leave the table and are folded under each row
as ``header: value`` lines; a table that still does not fit is printed at its
natural width, for the terminal to wrap. Anywhere else (a pipe, a file) the
table is plain aligned text, one row per line, with no trailing spaces, so
that grep, cut and awk see whole rows.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .env import Env

if TYPE_CHECKING:
    from rich.text import Text

GAP = 2  # spaces between columns
FOLD_INDENT = 4
MIN_WRAP = 16  # a free-text column is not squeezed below this


@dataclass(frozen=True)
class Column:
    header: str
    wrap: bool = False  # free text, which may wrap; otherwise a name or number: never cut
    optional: bool = False  # may leave a narrow terminal's table, folded under each row


class Table:
    """Rows of rich markup under ``columns``; :meth:`print` lays them out for stdout."""

    def __init__(
        self, *columns: Column | str, title: str | None = None, header: bool = True
    ) -> None:
        self.columns = [c if isinstance(c, Column) else Column(c) for c in columns]
        self.title = title
        self.header = header
        self.rows: list[list[str]] = []

    def add_row(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def print(self, env: Env) -> None:
        from rich.text import Text  # imported here: rich is slow to load

        cells = [[Text.from_markup(cell) for cell in row] for row in self.rows]
        width = env.out.width if env.io.stdout_isatty else None
        shown, widths = self._layout(cells, width)
        folded = [i for i in range(len(self.columns)) if i not in shown]
        lines: list[Text] = []
        if self.title:
            lines.append(Text(self.title, style="bold"))
        if self.header:
            titles = [Text(self.columns[i].header, style="bold") for i in shown]
            lines += self._row_lines(titles, shown, widths)
        for row in cells:
            lines += self._row_lines([row[i] for i in shown], shown, widths)
            items = [Text(f"{self.columns[i].header}: ") + row[i] for i in folded if row[i].plain]
            lines += _packed(items, width or 0)
        for line in lines:
            line.rstrip()
            env.out.print(line, soft_wrap=True)

    def _layout(
        self, cells: Sequence[Sequence[Text]], width: int | None
    ) -> tuple[list[int], dict[int, int]]:
        """The columns shown and their widths, for a terminal ``width`` (None: no limit)."""
        natural = {
            i: max([len(column.header) if self.header else 0] + [len(r[i].plain) for r in cells])
            for i, column in enumerate(self.columns)
        }
        shown = list(range(len(self.columns)))
        while True:
            widths = dict((i, natural[i]) for i in shown)
            if width is None or _total(widths) <= width:
                return shown, widths
            wraps = [i for i in shown if self.columns[i].wrap and natural[i] > MIN_WRAP]
            fixed = _total({i: w for i, w in widths.items() if i not in wraps})
            room = width - fixed - GAP * len(wraps)
            if wraps and room >= MIN_WRAP * len(wraps):
                for i in wraps:  # shared in proportion to what each would take
                    share = room * natural[i] // sum(natural[j] for j in wraps)
                    widths[i] = max(MIN_WRAP, share)
                if _total(widths) <= width:
                    return shown, widths
            optional = [i for i in shown if self.columns[i].optional]
            if optional:
                shown.remove(optional[-1])
                continue
            # Nothing left to fold: free text as narrow as it goes; names that do
            # not fit stay whole, for the terminal to wrap.
            for i in wraps:
                widths[i] = MIN_WRAP
            return shown, widths

    def _row_lines(
        self, row: Sequence[Text], shown: list[int], widths: dict[int, int]
    ) -> list[Text]:
        from rich.text import Text

        columns: list[list[Text]] = []
        for cell, i in zip(row, shown, strict=True):
            if len(cell.plain) <= widths[i]:
                columns.append([cell])
            else:  # free text wider than its column: wrapped at words (long words split)
                style = cell.style
                columns.append(
                    [Text(part, style=style) for part in textwrap.wrap(cell.plain, widths[i])]
                )
        lines = []
        for n in range(max(len(c) for c in columns)):
            line = Text()
            for k, (parts, i) in enumerate(zip(columns, shown, strict=True)):
                part = parts[n] if n < len(parts) else Text()
                line.append_text(part)
                if k < len(shown) - 1:
                    line.append(" " * (widths[i] - len(part.plain) + GAP))
            lines.append(line)
        return lines


def _total(widths: dict[int, int]) -> int:
    return sum(widths.values()) + GAP * (len(widths) - 1)


def _packed(items: list[Text], width: int) -> list[Text]:
    """``items`` under a row, indented, as many to a line as ``width`` holds."""
    from rich.text import Text

    lines: list[Text] = []
    for item in items:
        if lines and len(lines[-1].plain) + GAP + 1 + len(item.plain) <= width:
            lines[-1].append(" " * (GAP + 1))
            lines[-1].append_text(item)
        else:
            lines.append(Text(" " * FOLD_INDENT) + item)
    return lines


def print_paragraph(env: Env, text: str, *, first: str = "", rest: str = "") -> None:
    """``text`` (plain) wrapped at words to a terminal's width, indented; one line elsewhere."""
    if not env.io.stdout_isatty:
        env.out.print(first + text, markup=False, soft_wrap=True)
        return
    width = max(env.out.width, len(first) + MIN_WRAP)
    for line in textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest):
        env.out.print(line, markup=False, soft_wrap=True)
