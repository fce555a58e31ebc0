"""The ``vsockctl`` command group: global options, and the edge where errors end."""

from __future__ import annotations

import importlib
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any

import click

from vsockctl.exit_status import EXIT_STATUS_MEANINGS, ExitStatus, exit_status_for
from vsockctl.signals import stop_signals_raise

from .env import Env, current_env
from .errors import describe, report, report_output_failure, report_usage
from .stdio import ReaderGone, flush_stdout, standard_streams

EXIT_STATUS_HELP = "\n".join(
    f"  {int(code):>3}  {meaning}" for code, meaning in EXIT_STATUS_MEANINGS.items()
)


# Each command's module, imported when the command is asked for: a vsockctl run
# loads only what it uses (startup time is most of a short command's time).
COMMAND_MODULES = {
    "bench": "throughput",
    "capture": "capture",
    "completion": "completion",
    "connect": "connect",
    "doctor": "doctor",
    "forward": "forward",
    "info": "info",
    "listen": "listen",
    "ls": "ls",
    "recv": "recv",
    "send": "send",
    "sockopt": "sockopt",
    "throughput": "throughput",
    "vms": "vms",
    "wait-ready": "wait_ready",
}


class VsockctlGroup(click.Group):
    """A click group whose errors are one line each, with vsockctl's exit statuses."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(f"vsockctl.cli.{COMMAND_MODULES[cmd_name]}")
        return super().get_command(ctx, cmd_name)

    def load_all(self) -> MutableMapping[str, click.Command]:
        """Every command, imported (for the man pages and the tests)."""
        for module in set(COMMAND_MODULES.values()):
            importlib.import_module(f"vsockctl.cli.{module}")
        return self.commands

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            env = ctx.find_object(Env) or Env()
            raise click.exceptions.Exit(int(report(env, exc))) from exc

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        with standard_streams():
            try:
                status = self._run(argv, prog_name, complete_var, **extra)
                flush_stdout()
            except (OSError, ReaderGone) as exc:  # click's own output: stdout full or gone
                status = report_output_failure(exc)
        if standalone_mode:
            sys.exit(int(status))
        return status

    def _run(
        self, argv: list[str], prog_name: str | None, complete_var: str | None, **extra: Any
    ) -> int:
        try:
            with stop_signals_raise():  # SIGTERM and SIGHUP end a command as Ctrl-C does
                result = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            return result if isinstance(result, int) else 0
        except click.exceptions.NoArgsIsHelpError as exc:  # a bare 'vsockctl': its help
            click.echo(exc.ctx.get_help() if exc.ctx is not None else self.name)
            return ExitStatus.OK
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "vsockctl"
            message = " ".join(exc.format_message().split())  # one line, whatever click wrote
            return report_usage(f"{message} (see '{command} --help')", _wants_json(argv))
        except click.ClickException as exc:
            click.echo(f"vsockctl: {exc.format_message()}", err=True)
            return exc.exit_code
        except click.Abort as exc:  # Ctrl-C or a stop signal before the command ran
            stop = exc.__cause__ or exc.__context__
            if not isinstance(stop, KeyboardInterrupt):
                stop = KeyboardInterrupt()
            click.echo(f"vsockctl: {describe(stop)}", err=True)
            return exit_status_for(stop)


def _wants_json(argv: list[str]) -> bool:
    """Whether --json was given, before or after the command name (not after ``--``)."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in options


@click.group(
    "vsockctl",
    cls=VsockctlGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=f"\b\nExit status:\n{EXIT_STATUS_HELP}",
)
@click.option("--json", "json_", is_flag=True, help="JSON output, one object per line.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but data and errors.")
@click.option("-v", "--verbose", count=True, help="More detail; tracebacks of unexpected errors.")
@click.version_option(None, "-V", "--version", package_name="vsockctl", prog_name="vsockctl")
@click.pass_context
def cli(ctx: click.Context, json_: bool, quiet: bool, verbose: int) -> None:
    """See, test and measure vsock (AF_VSOCK) between virtual machines and their hosts.

    \b
    Start with:
      vsockctl info              is vsock here, which transports, what is my CID
      vsockctl COMMAND --help    every command explains itself, with examples

    Addresses are CID:PORT. CIDs may be named: any, hypervisor (0), local (1),
    host (2); ports may be 'any' when binding.
    """
    env = ctx.find_object(Env)
    if env is None:
        env = Env()
        ctx.obj = env
    env.json = env.json or json_
    env.quiet = env.quiet or quiet
    env.verbose += verbose


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="vsockctl")


__all__ = ["cli", "current_env", "main"]
