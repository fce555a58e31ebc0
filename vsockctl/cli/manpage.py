"""Man pages generated from the click commands, with hand-written sections that help.

    python -m vsockctl.cli.manpage man/      write man/vsockctl.1 and one page per command

Everything a page says about options comes from the command's own definition,
so ``--help`` and the man page cannot disagree; a test regenerates the pages
and fails on any difference from what is committed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from vsockctl.bench import protocol
from vsockctl.errors import ERRNO_MEANINGS
from vsockctl.events import catalog as events
from vsockctl.events.record import Key, keys_of
from vsockctl.exit_status import EXIT_STATUS_MEANINGS
from vsockctl.transfer import stall
from vsockctl.vsock import hybrid
from vsockctl.vsock.sockopts import OPTIONS

from .app import cli
from .completion import SHELLS

MUX_PAGES = ("vsockctl-connect", "vsockctl-listen", "vsockctl-send", "vsockctl-forward")
DATE = "2026-11-30"  # of this page layout; bump when the pages change in substance
SEE_ALSO = ["socat(1)", "ncat(1)", "ss(8)", "tcpdump(8)", "tshark(1)", "vsock(7)"]


def roff(text: str) -> str:
    """``text`` safe in a roff line: backslashes, and dots or quotes opening a line."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.MULTILINE)


def _prose(text: str) -> str:
    """A docstring paragraph as one roff line, its reST markup (``code``, *em*) dropped."""
    text = " ".join(line.strip() for line in text.splitlines())
    return roff(re.sub(r"\*(\w+)\*", r"\1", text.replace("``", "")))


def _split_help(help_text: str) -> tuple[list[str], list[str]]:
    """The description paragraphs and the example lines of a command's help."""
    paragraphs: list[str] = []
    examples: list[str] = []
    for block in re.split(r"\n\s*\n", help_text.strip()):
        lines = block.splitlines()
        if lines and lines[0].strip() == "\b":
            lines = lines[1:]
            if lines and lines[0].strip().rstrip(":") == "Examples":
                examples += [line.strip() for line in lines[1:] if line.strip()]
                continue
            paragraphs.append("\n".join(lines))
            continue
        paragraphs.append(" ".join(line.strip() for line in lines))
    return paragraphs, examples


def _example(line: str) -> list[str]:
    """An example line: the command in bold, what it does (after 3+ spaces) beside it."""
    command, *note = re.split(r"\s{3,}", line, maxsplit=1)
    out = [".TP", f"\\fB{roff(command.strip())}\\fR"]
    if note and note[0].strip():
        out.append(roff(note[0].strip()))
    return out


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    out: list[str] = []
    for param in command.get_params(ctx):
        if isinstance(param, click.Argument):
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, text = record
        out += [".TP", f"\\fB{roff(names)}\\fR", roff(text)]
    return out


def _arguments(command: click.Command, ctx: click.Context) -> str:
    """The arguments as --help's usage line shows them (click's own rendering)."""
    pieces = command.collect_usage_pieces(ctx)
    return " ".join(p for p in pieces if p != command.options_metavar)


def _exit_status() -> list[str]:
    out = [".SH EXIT STATUS"]
    for code, meaning in EXIT_STATUS_MEANINGS.items():
        out += [".TP", f"\\fB{int(code)}\\fR", roff(meaning)]
    return out


def _errno_section() -> list[str]:
    out = [
        ".SH VSOCK ERRORS",
        "What an errno usually means on vsock; vsockctl prints the meaning and the hint.",
    ]
    for meaning in ERRNO_MEANINGS.values():
        text = meaning.cause + (f"; {meaning.hint}" if meaning.hint else "")
        out += [".TP", f"\\fB{meaning.name}\\fR", roff(text)]
    return out


def _see_also(name: str) -> list[str]:
    pages = ["vsockctl(1)"] if name != "vsockctl" else []
    pages += [f"vsockctl-{c}(1)" for c in _commands() if f"vsockctl-{c}" != name]
    return [
        ".SH SEE ALSO",
        ", ".join(f"\\fB{p.split('(')[0]}\\fR({p.split('(')[1]}" for p in pages + SEE_ALSO),
    ]


def _commands() -> list[str]:
    return sorted(name for name in cli.load_all() if name != "bench")


def _json_section(name: str) -> list[str]:
    """What ``--json`` prints: every event the command may print, with its keys, from
    their declaration in vsockctl/events/ (the one the validator checks), and the
    vocabulary all records share."""
    out = [".SH JSON OUTPUT", "One JSON object per line, its \\fBevent\\fR key naming it."]
    if name == "vsockctl":
        out += ["Every record of every command uses the same words for the same things:"]
        for words, meaning in events.VOCABULARY:
            out += [".TP", f"\\fB{roff(words)}\\fR", roff(meaning)]
        return out
    out += ["Its keys follow the vocabulary in \\fBvsockctl\\fR(1), JSON OUTPUT."]
    shown = events.for_command(name.removeprefix("vsockctl-"))
    for event in shown:
        out += [f".SS {roff(event.name)}", roff(event.about[0].upper() + event.about[1:] + ".")]
        out += _keys(event.keys)
    for shape in events.nested_records(shown):
        title, _, about = (shape.__doc__ or shape.__name__.upper()).partition(": ")
        about = about[:1].upper() + about[1:]
        out += [f".SS {roff(title)}"] + ([roff(about)] if about else []) + _keys(keys_of(shape))
    return out


def _keys(keys: tuple[Key, ...]) -> list[str]:
    out = []
    for key in keys:
        text = key.meaning if key.required else f"(optional) {key.meaning}"
        out += [".TP", f"\\fB{roff(key.name)}\\fR", roff(text)]
    return out


def _extra_sections(name: str) -> list[str]:
    """Hand-written sections for the pages that need them."""
    out: list[str] = _json_section(name) if name != "vsockctl-completion" else []
    if name == "vsockctl-throughput":
        out += [".SH PROTOCOL", f"Version {protocol.VERSION} of the control exchange."]
        doc = (protocol.__doc__ or "").split("\n\n", 1)[1]
        for paragraph in re.split(r"\n\s*\n", doc.strip()):
            items = re.split(r"\n(?=\d+\. )", paragraph)
            if len(items) == 1 and not re.match(r"\d+\. ", items[0]):
                out += [".PP", _prose(paragraph)]
                continue
            for item in items:
                number, _, text = item.partition(" ")
                out += [f'.IP "{number}" 4', _prose(text)]
    if name in MUX_PAGES:
        out += [".SH HYBRID VSOCK", ".PP", roff(" ".join(hybrid.MUX_MAN_SECTION.split()))]
        for vmm, host_end, guest_end in hybrid.HALF_CLOSE_BY_VMM:
            text = f"host end shuts down writing: {host_end}; guest end: {guest_end}."
            out += [".TP", f"\\fB{roff(vmm)}\\fR", roff(text)]
        out += [".PP", roff(" ".join((stall.__doc__ or "").split("\n\n", 1)[1].split()))]
    if name == "vsockctl-sockopt":
        out += [".SH OPTIONS KNOWN"]
        for opt in OPTIONS:
            names = " / ".join(n for n in (opt.linux, opt.vmci) if n)
            text = (
                f"{opt.level_name} {opt.number}, {opt.ctype.label} ({opt.ctype.width} bytes), "
                f"default {opt.default}; {names}. {opt.summary}."
            )
            out += [".TP", f"\\fB{roff(opt.name)}\\fR", roff(text)]
    if name == "vsockctl":
        out += [
            ".SH SHELL COMPLETION",
            "Bash, zsh and fish complete commands, options and values, "
            "\\fB\\-\\-sockopt\\fR names included, through click's mechanism:",
            ".PP",
            ".nf",
            ".RS",
            *[roff(f'eval "$(vsockctl completion {shell})"') for shell in SHELLS[:2]],
            roff("vsockctl completion fish > ~/.config/fish/completions/vsockctl.fish"),
            ".RE",
            ".fi",
        ]
    return out


def render(command: click.Command, name: str, parent: click.Context | None = None) -> str:
    """The roff source of the page ``name`` for ``command``."""
    info_name = name.replace("-", " ")
    ctx = click.Context(command, info_name=info_name, parent=parent, **command.context_settings)
    paragraphs, examples = _split_help(command.help or "")
    summary = command.get_short_help_str(limit=200).rstrip(".")
    from importlib.metadata import version

    group = isinstance(command, click.Group)
    arguments = "COMMAND ..." if group else roff(_arguments(command, ctx))
    lines = [
        f'.TH {name.upper()} 1 "{DATE}" "vsockctl {version("vsockctl")}" "vsockctl manual"',
        ".SH NAME",
        f"{roff(name)} \\- {roff(summary)}",
        ".SH SYNOPSIS",
        f"\\fB{roff(info_name)}\\fR [\\fIOPTIONS\\fR] {arguments}".rstrip(),
        ".SH DESCRIPTION",
    ]
    for index, paragraph in enumerate(paragraphs):
        if index:
            lines.append(".PP")
        if "\n" in paragraph:
            lines += [".nf", roff(paragraph), ".fi"]
        else:
            lines.append(roff(paragraph))
    if name == "vsockctl-throughput":
        lines += [".PP", "\\fBvsockctl bench\\fR is the same command under a second name."]
    if isinstance(command, click.Group):
        lines += [".SH COMMANDS"]
        for sub_name in sorted(command.commands):
            sub = command.commands[sub_name]
            text = sub.get_short_help_str(limit=200)
            if sub_name == "bench":
                text = "The same command as throughput, under the name iperf users reach for."
            lines += [".TP", f"\\fB{roff(sub_name)}\\fR", roff(text)]
    lines += [".SH OPTIONS", *_options(command, ctx)]
    if isinstance(command, click.Group) and name != "vsockctl":
        for sub_name in sorted(command.commands):
            sub = command.commands[sub_name]
            sub_ctx = click.Context(sub, info_name=sub_name, parent=ctx)
            sub_paragraphs, sub_examples = _split_help(sub.help or "")
            lines += [f".SS {roff(info_name + ' ' + sub_name)} {roff(_arguments(sub, sub_ctx))}"]
            lines += [
                roff(p) if "\n" not in p else ".nf\n" + roff(p) + "\n.fi" for p in sub_paragraphs
            ]
            lines += _options(sub, sub_ctx)
            examples += sub_examples
    lines += _extra_sections(name)
    if examples:
        lines += [".SH EXAMPLES"]
        for example in examples:
            lines += _example(example)
    lines += _exit_status()
    if name == "vsockctl":
        lines += _errno_section()
    lines += _see_also(name)
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    """File name -> roff source, for vsockctl(1) and each command."""
    cli.load_all()  # commands load on demand; the pages need every one
    root = click.Context(cli, info_name="vsockctl", **cli.context_settings)
    result = {"vsockctl.1": render(cli, "vsockctl")}
    for name in _commands():
        result[f"vsockctl-{name}.1"] = render(cli.load_all()[name], f"vsockctl-{name}", root)
    # bench is throughput under another name: its page too, so 'man vsockctl-bench' works
    result["vsockctl-bench.1"] = render(cli.load_all()["bench"], "vsockctl-bench", root)
    return result


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, source in pages().items():
        path = directory / file_name
        path.write_text(source)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "man")):
        print(path)
