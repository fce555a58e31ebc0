"""The command-line layer: click commands and rich output over the core."""

from __future__ import annotations

from . import commands  # noqa: F401  (registers the commands)
from .app import cli, main

__all__ = ["cli", "main"]
