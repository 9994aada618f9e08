"""Find the example command lines the tool and the docs show, and parse them with the real CLI parser.

Shared by the fast test (every example parses) and the slow one (those that can run on test assets run).
Reads whatever is there: each command's ``--help`` output (every registered command, including ones
added later) and the fenced code blocks of README.md and docs/*.md.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import typer
from typer.testing import CliRunner

from ptsq.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\s*$")
SHELL_JOINERS = {"&&", "||", ";", "|"}
REDIRECT = re.compile(r"\d?(>>?|<)&?")  # '>', '>>', '2>', '<' … (what follows names a file)


@dataclass(frozen=True)
class Example:
    source: str  # "ptsq quantize --help" or "README.md:31"
    line: str  # as printed (a shell line: may chain commands, end in a comment)

    def commands(self) -> list[list[str]]:
        """Each ``ptsq`` command in the line, as argv without the leading ``ptsq``."""
        tokens = shlex.split(self.line, comments=True)
        out: list[list[str]] = [[]]
        redirect = False
        for t in tokens:
            if t in SHELL_JOINERS:
                out.append([])
            elif redirect:  # the file a redirection names is not an argument
                redirect = False
            elif REDIRECT.fullmatch(t):
                redirect = True
            elif REDIRECT.match(t):  # '>file'
                continue
            else:
                out[-1].append(t)
        return [argv[1:] for argv in out if argv and argv[0] == "ptsq"]


def command_names() -> list[str]:
    return list(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def help_text(*args: str) -> str:
    res = CliRunner().invoke(app, [*args, "--help"])
    assert res.exit_code == 0, res.output
    return res.stdout


def help_examples() -> list[Example]:
    found = []
    for name in command_names():
        for line in help_text(name).splitlines():
            if line.strip().startswith("ptsq "):
                found.append(Example(f"ptsq {name} --help", line.strip()))
    return found


def doc_examples(paths: list[Path] | None = None) -> list[Example]:
    """``ptsq …`` lines inside fenced code blocks (not Python ones); a trailing backslash joins lines."""
    paths = paths or [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = []
    for path in paths:
        lang: str | None = None
        pending = ""
        for n, raw in enumerate(path.read_text().splitlines(), 1):
            fence = FENCE.match(raw.strip())
            if fence:
                lang = None if lang is not None else fence.group(1)
                continue
            if lang is None or lang == "python":
                continue
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            if line.startswith("ptsq "):
                found.append(Example(f"{path.relative_to(ROOT)}:{n}", line))
    return found


def parse(argv: list[str]) -> dict[str, object]:
    """Parse ``ptsq <argv>`` as the CLI would, stopping before the command runs; return the parameters.

    Raises Click's UsageError (unknown command or option, malformed value, missing argument) or
    AssertionError; option values with a parser (sizes, lists, fractions, presets) are checked too.
    """
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="ptsq")
    assert argv, "no command after 'ptsq'"
    cmd = group.get_command(ctx, argv[0])  # type: ignore[attr-defined]
    assert cmd is not None, f"no command {argv[0]!r}"
    return dict(cmd.make_context(argv[0], list(argv[1:]), parent=ctx, resilient_parsing=False).params)


def positional_values(argv: list[str]) -> list[str]:
    """The values ``ptsq <argv>`` gives its positional arguments (model specs, artifacts …)."""
    group = typer.main.get_command(app)
    cmd = group.get_command(group.context_class(group, info_name="ptsq"), argv[0])  # type: ignore[attr-defined]
    names = [p.name for p in cmd.params if p.param_type_name == "argument"]
    params = parse(argv)
    values = [params[n] for n in names if params.get(n) is not None]
    return [str(v) for value in values for v in (value if isinstance(value, (list, tuple)) else [value])]
