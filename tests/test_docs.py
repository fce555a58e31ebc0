"""Docs that cannot drift: man pages, completion, and the README's examples."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tests.conftest import Invoke
from tests.readme import README, sections, unit_exec_lines, vsockctl_calls, without_comment
from vsockctl.cli import cli
from vsockctl.cli.env import Env
from vsockctl.cli.manpage import pages

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man"
BIN = Path(sys.executable).parent


GENERATED = pages()
COMMANDS = sorted(set(cli.load_all()) - {"bench"})  # bench is throughput's other name


def test_man_holds_a_page_for_each_command_and_no_other() -> None:
    assert sorted(p.name for p in MAN.glob("*.1")) == sorted(GENERATED), (
        "man/ is out of date: run 'python -m vsockctl.cli.manpage man'"
    )


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_man_pages_are_generated_from_the_commands(name: str) -> None:
    assert (MAN / name).read_text() == GENERATED[name], (
        f"man/{name} differs from the commands: run 'python -m vsockctl.cli.manpage man'"
    )


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_a_page_with_examples(name: str) -> None:
    text = (MAN / f"vsockctl-{name}.1").read_text()
    assert ".SH EXAMPLES" in text and ".SH EXIT STATUS" in text
    assert "\\fBsocat\\fR(1)" in text and "\\fBvsock\\fR(7)" in text


@pytest.mark.parametrize("page", sorted(p.name for p in MAN.glob("*.1")))
def test_man_pages_render_without_warnings(page: str) -> None:
    groff = subprocess.run(
        ["groff", "-ww", "-z", "-man", str(MAN / page)], capture_output=True, text=True
    )
    assert groff.returncode == 0 and groff.stderr == "", groff.stderr
    if shutil.which("mandoc"):
        lint = subprocess.run(
            ["mandoc", "-Tlint", "-Wwarning", str(MAN / page)], capture_output=True, text=True
        )
        assert lint.stdout + lint.stderr == ""


def test_pip_install_puts_man_pages_where_man_finds_them(tmp_path: Path) -> None:
    wheels, prefix = tmp_path / "wheels", tmp_path / "prefix"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(wheels)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("vsockctl-*.whl")
    # A fresh environment of its own: pip must not touch the one running the tests.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    install = subprocess.run(
        [*pip, "--python", str(prefix / "bin" / "python"), "install", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    man1 = prefix / "share" / "man" / "man1"
    for name, source in pages().items():
        assert (man1 / name).read_text() == source
    if shutil.which("man"):
        found = subprocess.run(
            ["man", "-w", "-M", str(prefix / "share" / "man"), "vsockctl-send"],
            capture_output=True,
            text=True,
        )
        assert found.stdout.strip() == str(man1 / "vsockctl-send.1")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(invoke: Invoke, shell: str) -> None:
    result = invoke(["completion", shell])
    assert result.exit_code == 0
    assert "_VSOCKCTL_COMPLETE" in result.stdout


def complete(words: str, cword: int) -> list[str]:
    env = {
        **os.environ,
        "_VSOCKCTL_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(cword),
    }
    result = subprocess.run(
        [str(BIN / "vsockctl")], env=env, capture_output=True, text=True, timeout=30
    )
    return result.stdout.splitlines()


def test_completion_of_commands_options_and_sockopt_values() -> None:
    assert "plain,throughput" in complete("vsockctl thr", 1)
    assert "plain,--sockopt" in complete("vsockctl send --sock", 2)
    values = complete("vsockctl send --sockopt buffer-m", 3)
    assert values == ["nospace,buffer-min-size=", "nospace,buffer-max-size="]  # no space after =
    assert "plain,seqpacket" in complete("vsockctl recv --type s", 3)


def all_calls() -> list[tuple[str, list[str]]]:
    """Every vsockctl call of the README: its shell examples and its unit files."""
    lines = [line for block in sections().values() for line in block] + unit_exec_lines()
    return [(line, args) for line in lines for args in vsockctl_calls(line)]


def test_the_unit_files_are_read() -> None:
    assert any("throughput server" in line for line in unit_exec_lines())


@pytest.mark.parametrize(("line", "args"), all_calls(), ids=[line for line, _ in all_calls()])
def test_every_readme_command_parses(
    line: str, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each vsockctl call in the README names real commands and options with valid values."""
    monkeypatch.chdir(tmp_path)
    for arg in args:  # the files an example reads (disk.img) exist where it runs
        if not arg.startswith("-") and "." in arg and "/" not in arg and ":" not in arg:
            (tmp_path / arg).touch()
    with cli.make_context("vsockctl", list(args), obj=Env()) as ctx:
        command: click.Command = cli
        # click keeps a group's unparsed tokens (the subcommand first) in _protected_args.
        while isinstance(command, click.Group) and (
            rest := [*getattr(ctx, "_protected_args", []), *ctx.args]
        ):
            name, sub, rest = command.resolve_command(ctx, rest)
            assert sub is not None and name is not None, line
            ctx = sub.make_context(name, rest, parent=ctx)
            command = sub


HOST_SAFE = {
    "Is vsock here?": [
        "vsockctl info",
        "vsockctl info --json | jq .local_cid",
        'vsockctl -q info && echo "vsock can carry data here"',
    ],
    "Tune and inspect socket options": [
        "vsockctl sockopt list",
        "vsockctl sockopt set buffer-max-size=2M buffer-size=1M",
        "vsockctl sockopt set buffer-size=1M",
    ],
}


def test_readme_lists_the_examples_the_host_runs() -> None:
    found = {heading: [without_comment(x) for x in lines] for heading, lines in sections().items()}
    for heading, lines in HOST_SAFE.items():
        assert all(line in found[heading] for line in lines), heading


@pytest.mark.parametrize("line", [line for lines in HOST_SAFE.values() for line in lines])
def test_readme_examples_run_on_this_machine(line: str) -> None:
    """The examples that only read or create sockets run for real here (no traffic)."""
    if "jq" in line and not shutil.which("jq"):
        pytest.skip("jq is not installed")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {line}"], env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr


def test_readme_quickstart_matches_ci() -> None:
    text = README.read_text()
    assert "scripts/test" in text
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("scripts/test")
