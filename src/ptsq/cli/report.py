"""ptsq report: one self-contained HTML page (or Markdown) from artifacts and bench/eval/analyze JSON."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from ptsq.cli import _options as o
from ptsq.cli._errors import guarded
from ptsq.cli._output import Output

EXAMPLES = """
Examples:

  ptsq report lite0_int8.pt -o report.html

  ptsq bench examples.reference.imagenet:efficientnet_lite0 lite0_int8.pt --threads 1,2 --json > bench.json

  ptsq report lite0_int8.pt lite0_int8.onnx --bench bench.json --eval eval.json --analyze analyze.json -o report.html

  ptsq report lite0_int8.pt --bench bench.json -o report.md          (Markdown, for pull requests and CI logs)

The JSON files are what 'ptsq bench|eval|analyze ... --json' print on stdout. Nothing is fetched from the
network: styles and charts (SVG) are inside the file, which reads without JavaScript.
"""


def report_cmd(
    artifacts: Annotated[
        list[str] | None, typer.Argument(metavar="[ARTIFACT]...", help="Artifacts written by 'ptsq quantize'.")
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Report file to write (.html, or .md).")] = "",
    bench: Annotated[str | None, typer.Option("--bench", help="JSON from 'ptsq bench ... --json'.")] = None,
    eval_json: Annotated[str | None, typer.Option("--eval", help="JSON from 'ptsq eval ... --json'.")] = None,
    analyze: Annotated[str | None, typer.Option("--analyze", help="JSON from 'ptsq analyze ... --json'.")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="html | md (default: from the -o suffix; html otherwise).")
    ] = None,
    title: Annotated[str | None, typer.Option("--title", help="Heading of the report.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite -o even if it is not a ptsq report.")] = False,
    json_out: o.JsonOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    from ptsq.errors import ConfigError
    from ptsq.report import build, check_report_path, format_for, load_json, write_report

    out = Output(json_mode=json_out, quiet=quiet)
    paths = list(artifacts or [])
    if not output:
        raise ConfigError("no report file given", "pass -o report.html (or -o report.md)")
    if not (paths or bench or eval_json or analyze):
        raise ConfigError("nothing to report", "give at least one artifact, or --bench/--eval/--analyze JSON")
    kind = format_for(output, fmt)
    inputs = tuple(x for x in (*paths, bench, eval_json, analyze) if x)
    target = check_report_path(output, inputs=inputs, force=force)
    loaded = {k: load_json(p, k) if p else None for k, p in (("bench", bench), ("eval", eval_json),
                                                              ("analyze", analyze))}  # fmt: skip
    report = build(paths, title=title, **loaded)
    write_report(report, target, kind)
    data: dict[str, Any] = {
        "report": str(target), "format": kind, "artifacts": [a.path for a in report.artifacts],
        **{k: v for k, v in (("bench", bench), ("eval", eval_json), ("analyze", analyze)) if v},
    }  # fmt: skip
    out.result(data, render)


def render(console: Console, d: dict[str, Any]) -> None:
    console.print(f"wrote {d['report']} ({d['format']})", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("report", help="Write one HTML (or Markdown) report from artifacts and bench/eval/analyze JSON.\n"
                + EXAMPLES)(guarded(report_cmd))  # fmt: skip
