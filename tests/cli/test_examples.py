"""Every example in the help texts and the docs parses with the real CLI parser (fast; the slow test runs them)."""

from __future__ import annotations

import re

import pytest

from ptsq.cli._errors import UsageError
from tests.cli.example_lines import command_names, doc_examples, help_examples, help_text, parse

HELP = help_examples()
DOCS = doc_examples()


@pytest.mark.parametrize("example", HELP + DOCS, ids=lambda e: e.source)
def test_example_parses(example):
    commands = example.commands()
    assert commands, f"{example.source}: no ptsq command in {example.line!r}"
    for argv in commands:
        try:
            parse(argv)
        except UsageError as exc:
            pytest.fail(f"{example.source}: {example.line!r}: {exc.format_message()}")


def test_examples_are_found_for_every_command_and_in_the_readme():
    sources = {e.source for e in HELP}
    assert {f"ptsq {name} --help" for name in ("quantize", "bench", "eval", "analyze", "info")} <= sources
    assert sum(e.source.startswith("README.md") for e in DOCS) >= 5


def test_help_prints_each_example_line_whole():
    """Help is not re-wrapped to the terminal: every ``ptsq …`` line of a command's help text is printed
    on one line, so a copied line runs (Typer's Rich help wrapped them at 80 columns)."""
    from typer.main import get_command

    from ptsq.cli.main import app

    group = get_command(app)
    for name in command_names():
        source = (group.commands[name].help or "").splitlines()
        written = [ln.strip() for ln in source if ln.strip().startswith("ptsq ")]
        printed = {ln.strip() for ln in help_text(name).splitlines()}
        missing = [ln for ln in written if ln not in printed]
        assert not missing, (name, missing)


def test_the_parser_rejects_what_a_broken_example_would_hold():
    base = ["quantize", "m.py:Net", "--calib", "c/", "-o", "o.pt"]
    for bad in (["--bogus"], ["--scale", "abc"], ["--mean", "0.5,x"], ["--input-size", "big"], ["--preset", "nope"],
                ["--channels", "cmyk"], ["--num-calib", "many"]):  # fmt: skip
        with pytest.raises(UsageError):
            parse(base + bad)
    with pytest.raises(AssertionError):
        parse(["quantise"])


@pytest.mark.parametrize("text,value", [("1/255", 1 / 255), ("0.5", 0.5), ("2e-3", 2e-3), (" 1 / 128 ", 1 / 128)])
def test_scale_takes_fractions(text, value):
    assert parse(["quantize", "m.py:Net", "-o", "o.pt", "--scale", text])["scale"] == pytest.approx(value, rel=1e-12)


def _help_values(help_text: str) -> list[str]:
    """The example values an option's help gives after "e.g.": "e.g. 224 or 240x320; …" -> ["224", "240x320"]."""
    out = []
    for found in re.findall(r"e\.g\.\s+(.+?)(?:;|\s\(|$)", help_text):  # up to "; " or " (" (a remark)
        for value in re.split(r"\s+or\s+", found.strip()):
            value = re.sub(r"\.$", "", value.strip())  # the sentence's full stop
            if value and " " not in value:
                out.append(value)
    return out


def _option_examples() -> list[tuple[str, str, str]]:
    from typer.main import get_command

    from ptsq.cli.main import app

    group = get_command(app)
    found = []
    for name in command_names():
        for param in group.commands[name].params:
            if param.param_type_name == "option" and not getattr(param, "is_flag", False):
                found += [(name, param.opts[0], v) for v in _help_values(getattr(param, "help", "") or "")]
    return found


def _required_args(name: str) -> list[str]:
    """Stand-in values for a command's required arguments and options (parsing only; nothing runs)."""
    from typer.main import get_command

    from ptsq.cli.main import app

    argv: list[str] = []
    for param in get_command(app).commands[name].params:
        if param.required:
            argv += ["x.pt"] if param.param_type_name == "argument" else [param.opts[0], "x.pt"]
    return argv


@pytest.mark.parametrize("command,option,value", _option_examples(), ids=lambda v: str(v))
def test_every_value_an_option_help_shows_is_accepted(command, option, value):
    try:
        parse([command, *_required_args(command), option, value])
    except UsageError as exc:
        pytest.fail(f"ptsq {command} {option} {value}: help shows it, parser refuses it: {exc.format_message()}")


def test_option_help_examples_are_found():
    found = {(c, o) for c, o, _ in _option_examples()}
    assert {("quantize", "--scale"), ("quantize", "--input-size"), ("bench", "--threads"), ("eval", "--mean")} <= found
    assert ("quantize", "--scale", "1/255") in _option_examples()
