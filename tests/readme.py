"""The README's shell examples, as data for the tests that run them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "(", ")"}


def sections() -> dict[str, list[str]]:
    """Heading -> the lines of the ```sh blocks under it."""
    result: dict[str, list[str]] = {}
    heading = ""
    in_block = False
    for line in README.read_text().splitlines():
        if line.startswith("#") and not in_block:
            heading = line.lstrip("#").strip()
        elif line.strip() == "```sh":
            in_block = True
        elif line.strip() == "```" and in_block:
            in_block = False
        elif in_block and line.strip():
            result.setdefault(heading, []).append(line.strip())
    return result


def unit_exec_lines() -> list[str]:
    """The ``ExecStart=`` lines of the unit files in the README's ```ini blocks, as
    shell lines (``/usr/local/bin/vsockctl`` read as ``vsockctl``)."""
    found = []
    in_block = False
    for line in README.read_text().splitlines():
        if line.strip() == "```ini":
            in_block = True
        elif line.strip() == "```":
            in_block = False
        elif in_block and line.startswith("ExecStart="):
            command = line.removeprefix("ExecStart=").strip()
            found.append(re.sub(r"^\S*/vsockctl\b", "vsockctl", command))
    return found


def vsockctl_calls(line: str) -> list[list[str]]:
    """The argument lists of every ``vsockctl`` in a shell line (pipes, $(...) included)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.commenters = "#"
    lexer.whitespace_split = True
    calls: list[list[str]] = []
    current: list[str] | None = None
    for token in lexer:
        inner = re.fullmatch(r"\$\((.*)\)", token)
        if inner:
            calls += vsockctl_calls(inner.group(1))
            continue
        if token in OPERATORS or token.startswith((">", "<")):
            current = None
            continue
        if current is None:
            if token == "vsockctl":
                current = []
                calls.append(current)
            continue
        current.append(token)
    return calls


def without_comment(line: str) -> str:
    """``line`` without its trailing ``  # comment``."""
    return re.sub(r"\s+#[^\"']*$", "", line).strip()
