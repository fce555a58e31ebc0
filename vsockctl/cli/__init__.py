"""The command-line layer: click commands and rich output over the core."""

from __future__ import annotations

from .app import cli, main  # commands load on demand (app.COMMAND_MODULES)

__all__ = ["cli", "main"]
