"""``vsockctl completion``: the shell completion script, through click's own mechanism."""

from __future__ import annotations

import os

import click
from click.shell_completion import BashComplete, FishComplete, ShellComplete, ZshComplete

from .app import cli
from .options import output_options

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_VSOCKCTL_COMPLETE"


# Completions of type 'nospace' (NAME= of --sockopt) leave the cursor after them,
# for the value. click's scripts know plain, dir and file; these add nospace.
# fish needs nothing: it adds no space after a completion that ends in '='.
class BashNoSpace(BashComplete):
    source_template = BashComplete.source_template.replace(
        """        elif [[ $type == 'plain' ]]; then""",
        """        elif [[ $type == 'nospace' ]]; then
            COMPREPLY+=($value)
            compopt -o nospace
        elif [[ $type == 'plain' ]]; then""",
    )


class ZshNoSpace(ZshComplete):
    source_template = ZshComplete.source_template.replace(
        """        elif [[ "$type" == "dir" ]]; then""",
        """        elif [[ "$type" == "nospace" ]]; then
            compadd -U -S '' -V unsorted -- "$key"
        elif [[ "$type" == "dir" ]]; then""",
    )


class FishNoSpace(FishComplete):
    source_template = FishComplete.source_template.replace(
        """        else if test $metadata[1] = "plain";""",
        """        else if test $metadata[1] = "plain" -o $metadata[1] = "nospace";""",
    )


SCRIPTS: dict[str, type[ShellComplete]] = {
    "bash": BashNoSpace,
    "zsh": ZshNoSpace,
    "fish": FishNoSpace,
}


@cli.command("completion", short_help="Print the completion script for bash, zsh or fish.")
@click.argument("shell", type=click.Choice(SHELLS), required=False)
@output_options
def completion_command(shell: str | None) -> None:
    """Print the script that makes SHELL complete vsockctl's commands, options and
    values (socket types, patterns, --sockopt names, files). Without SHELL, the
    one $SHELL names.

    It is click's completion: the script calls vsockctl back with
    _VSOCKCTL_COMPLETE set, so completions always match the installed version.

    \b
    Examples:
      eval "$(vsockctl completion bash)"         add to ~/.bashrc
      eval "$(vsockctl completion zsh)"          add to ~/.zshrc
      vsockctl completion fish > ~/.config/fish/completions/vsockctl.fish
    """
    if shell is None:
        shell = os.path.basename(os.environ.get("SHELL", ""))
        if shell not in SHELLS:
            raise click.UsageError(f"name the shell: {', '.join(SHELLS)}")
    script = SCRIPTS[shell](cli, {}, "vsockctl", COMPLETE_VAR).source()
    click.echo(script)
