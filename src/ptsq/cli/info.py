"""ptsq info: print an artifact's manifest."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ptsq.cli import _options as o
from ptsq.cli._errors import guarded
from ptsq.cli._output import Output, human_bytes

EXAMPLES = """
Examples:

  ptsq info resnet18_int8.pt

  ptsq info resnet18_int8.pt --json

  ptsq info resnet18_int8.pt --recipe > recipe.yaml
"""


def info_cmd(
    artifact_path: Annotated[str, typer.Argument(metavar="ARTIFACT", help="A file written by 'ptsq quantize'.")],
    recipe: Annotated[
        bool, typer.Option("--recipe", help="Print only the recipe (YAML) the artifact was made with.")
    ] = False,
    json_out: o.JsonOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    from ptsq.manifest_file import info  # reads the manifest only: no torch, no runtime

    out = Output(json_mode=json_out, quiet=quiet)
    data = info(artifact_path)
    if recipe:
        from ptsq.config import QuantConfig

        config = QuantConfig.from_dict(data["config"])  # older artifacts' configs are read and upgraded
        if json_out:
            out.result(config.to_dict(), render)
        else:
            typer.echo(config.to_yaml(), nl=False)
        return
    out.result(data, render)


def _speed(s: dict[str, Any] | None) -> str:
    """The speed check's verdict and figures (artifacts from before it have none)."""
    if not s:
        return "-"
    if s.get("verdict") == "not checked":
        return "not checked" + (f" ({s['why']})" if s.get("why") else "")
    pairs = "; ".join(f"{p['speedup']:.2f}x at {p['threads']} thread(s)" for p in s.get("pairs", []))
    return f"{s.get('verdict')}: int8 vs {s.get('fp32', 'fp32')}, {pairs}"


def render(console: Console, m: dict[str, Any]) -> None:
    from ptsq.manifest_file import plain_loader, runtime_of

    t = Table(title=f"ptsq artifact {m['path']}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    counts = {"int8": 0, "fp32": 0}
    for r in m.get("precision", []):
        counts[r["precision"]] = counts.get(r["precision"], 0) + 1
    pre = m.get("preprocess") or {}
    cal = m.get("calibration", {})
    chk = m.get("check", {})
    rows = [
        ("size", human_bytes(m.get("bytes"))),
        ("made with", f"ptsq {m.get('ptsq_version')}, torch {m.get('torch_version')}"),
        ("engine / backend", f"{m.get('engine')} / {m.get('backend')}"),
        ("runs on", runtime_of(m)),
        ("without ptsq", plain_loader(m)),
        ("mode", str(m.get("mode"))),
        ("input", ", ".join(f"{s} {d}" for s, d in zip(m["input"]["shapes"], m["input"]["dtypes"]))),
        ("preprocess", ", ".join(f"{k}={v}" for k, v in pre.items()) if pre else "-"),
        ("calibration", ", ".join(f"{k}={v}" for k, v in cal.items())),
        (
            "self-check",
            ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in chk.items() if k != "culprits"
            ),
        ),
        ("speed", _speed(m.get("speed"))),
        ("layers", f"{counts['int8']} int8, {counts['fp32']} fp32"),
        ("source weights", str(m.get("source_weights_sha256", ""))[:16] + "…"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    p = Table(title="precision map", title_justify="left")
    for col in ("layer", "op", "precision", "why fp32"):
        p.add_column(col)
    for r in m.get("precision", []):
        style = "" if r["precision"] == "int8" else "yellow"
        p.add_row(r["name"], r["op"], r["precision"], r.get("reason", ""), style=style)
    console.print(p)


def register(app: typer.Typer) -> None:
    app.command("info", help="Show an artifact's manifest and precision map.\n" + EXAMPLES)(guarded(info_cmd))
