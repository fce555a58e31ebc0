"""``vsockctl completion``: the shell completion script, through click's own mechanism."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from .app import cli

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_VSOCKCTL_COMPLETE"


@cli.command(short_help="Print the completion script for bash, zsh or fish.")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the script that makes SHELL complete vsockctl's commands, options and
    values (socket types, patterns, --sockopt names, files).

    It is click's completion: the script calls vsockctl back with
    _VSOCKCTL_COMPLETE set, so completions always match the installed version.

    \b
    Examples:
      eval "$(vsockctl completion bash)"         add to ~/.bashrc
      eval "$(vsockctl completion zsh)"          add to ~/.zshrc
      vsockctl completion fish > ~/.config/fish/completions/vsockctl.fish
    """
    completion_class = get_completion_class(shell)
    assert completion_class is not None  # every choice is one of click's shells
    script = completion_class(cli, {}, "vsockctl", COMPLETE_VAR).source()
    click.echo(script)
