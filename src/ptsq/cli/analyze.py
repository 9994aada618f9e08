"""ptsq analyze: per-layer sensitivity of the int8 model, and the --skip options that fix the worst layers."""

from __future__ import annotations

import shlex
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ptsq.cli import _config as cfg
from ptsq.cli import _options as o
from ptsq.cli import _report
from ptsq.cli._errors import guarded
from ptsq.cli._output import Output

EXAMPLES = """
Examples:

  ptsq analyze torchvision:resnet18 --weights resnet18.pth --calib images/

  ptsq analyze examples.reference.imagenet:efficientnet_lite0 --calib photos/ --preset effnet-lite --plot layers.png

  ptsq analyze mypkg.models:build_net --weights net.pth --calib images/ --json

  ptsq analyze torchvision:resnet18 --weights resnet18.pth --calib images/ --ray auto   # layers tried in parallel
"""


def analyze_cmd(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Argument(help="torchvision:NAME, package.module:callable, file.py:callable, or a file")
    ],
    calib: Annotated[str, typer.Option("--calib", "-c", help="Folder of calibration images (searched recursively).")],
    weights: o.WeightsOpt = None,
    trust_pickle: o.TrustOpt = False,
    backend: Annotated[str, typer.Option("--backend", help="auto | x86 | fbgemm | onednn | qnnpack")] = "auto",
    num_calib: o.NumCalibOpt = 300,
    batch_size: o.CalibBatchOpt = 32,
    seed: o.SeedOpt = 0,
    skip: Annotated[
        list[str] | None, typer.Option("--skip", help="Keep layers in fp32 while analysing (name:/regex:/type:).")
    ] = None,
    speed_guard: Annotated[
        float, typer.Option("--speed-guard", help="As for quantize; 0 = off (analyse every layer).")
    ] = 1.5,
    observer: cfg.ObserverOpt = None,
    cleanup: cfg.CleanupOpt = None,
    no_cleanup: cfg.NoCleanupOpt = None,
    config_file: cfg.ConfigOpt = None,
    top: Annotated[int, typer.Option("--top", help="Recommend at most this many layers for fp32.")] = 3,
    min_gain: Annotated[
        float, typer.Option("--min-gain", help="Recommend a layer only if fp32 lifts the output SQNR this many dB.")
    ] = 1.0,
    plot: Annotated[str | None, typer.Option("--plot", help="Write a bar chart (PNG) of the ranking here.")] = None,
    report_file: o.ReportOpt = None,
    ray: o.RayOpt = None,
    workers: o.WorkersOpt = None,
    json_out: o.JsonOpt = False,
    quiet: o.QuietOpt = False,
    **pre: Any,
) -> None:
    from ptsq.analysis.sensitivity import analyze
    from ptsq.data.images import CalibrationImages
    from ptsq.errors import ConfigError
    from ptsq.models import load_model

    params = dict(locals())
    out = Output(json_mode=json_out, quiet=quiet)
    if top < 0:
        raise ConfigError(f"--top {top} must be at least 0", "e.g. --top 3")
    config = cfg.build_config(ctx, locals())
    if plot:
        from ptsq import artifact

        artifact.check_output_path(plot, True)
    report_path = _report.check_path(report_file, (model, calib, weights or ""))
    loaded = load_model(model, weights=weights, trust_pickle=trust_pickle)
    pre = o.preprocess_from(loaded.preprocess, pre, source=loaded.preprocess_source)
    images = CalibrationImages(
        calib, pre, num=config.calibration.num, batch_size=config.calibration.batch_size, seed=config.seed
    )
    report = analyze(
        loaded.model, images, config=config, top=top, min_gain_db=min_gain, progress=out.progress, ray=ray,
        workers=workers,
    )  # fmt: skip
    data: dict[str, Any] = {"model": model, "calib": calib, **report.to_dict()}
    flags = _given_flags(ctx, {**params, **params["pre"]})  # every option that shaped this analysis
    data["options"] = flags  # lets a report rebuild this very analyze command
    data["command"] = (
        f"ptsq quantize {shlex.quote(model)} --calib {shlex.quote(calib)} {flags} -o OUT.pt {report.skip_options()}"
        if report.keep_fp32
        else None
    )
    if plot:
        from ptsq.analysis.plot import plot_sensitivity

        data["plot"] = str(plot_sensitivity(report, plot))
    _report.write(out, report_path, data, analyze=data)
    out.result(data, render)


# the options a recommended quantize command repeats (the preprocessing ones arrive in **pre)
RECIPE_PARAMS = {"weights", "trust_pickle", "backend", "num_calib", "batch_size", "seed", "skip", "speed_guard",
                 "observer", "cleanup", "no_cleanup", "config_file", *o.PREPROCESS_OPTIONS}  # fmt: skip


def _given_flags(ctx: typer.Context, values: dict[str, Any]) -> str:
    """The recipe options given on this command line, as flags: the quantize command it recommends (and a
    report's analyze command) then build exactly the model analysed, recipe file included."""
    out = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name or "")
        if param.name not in RECIPE_PARAMS or source is None or source.name not in ("COMMANDLINE", "ENVIRONMENT"):
            continue
        flag, value = max(param.opts, key=len), values.get(param.name or "")
        if isinstance(value, bool):
            out += [flag] if value else []
        else:
            out += [f"{flag} {shlex.quote(str(v))}" for v in (value if isinstance(value, (list, tuple)) else [value])]
    return " ".join(out)


COLUMNS = (
    "gain dB (the ranking) = output SQNR with that layer alone in fp32 minus the all-int8 SQNR; layer SQNR dB = "
    "that layer's int8 output vs the fp32 value at the same point, earlier layers' error included: a conv that "
    "feeds ReLU6/hardtanh/clamp already outputs only the activation's range in int8, so the values the activation "
    "removes count as error there and it reads low (often 0-6 dB) without being a bad layer; rank by gain."
)


def render(console: Console, d: dict[str, Any]) -> None:
    agree = f", top-1 agreement {d['baseline_agreement']:.3f}" if d.get("baseline_agreement") is not None else ""
    t = Table(
        title=f"ptsq analyze {d['model']}: all-int8 output SQNR {d['baseline_sqnr_db']:.1f} dB{agree} "
        f"on {d['samples']} held-back calibration samples",
        title_justify="left",
    )
    # full layer names (what --skip name: needs), folded onto more lines when the terminal is narrow
    room = console.width - 72  # what the other columns leave
    wide = min(max((len(r["name"]) for r in d["layers"]), default=8), room) if room >= 12 else None
    for col in ("rank", "layer", "op", "layer SQNR dB", "output SQNR if fp32", "gain dB"):
        t.add_column(col, justify="right" if col not in ("layer", "op") else "left", overflow="fold",
                     min_width=wide if col == "layer" else None)  # fmt: skip
    for i, r in enumerate(d["layers"], 1):
        style = "bold red" if r["name"] in d["keep_fp32"] else ""
        t.add_row(str(i), r["name"], r["op"], _f(r["layer_sqnr_db"]), _f(r["solo_fp32_sqnr_db"]), _f(r["gain_db"]),
                  style=style)  # fmt: skip
    console.print(t)
    console.print(COLUMNS, soft_wrap=True)
    if d["keep_fp32"]:
        together = d.get("keep_fp32_sqnr_db")
        console.print(
            f"keep in fp32: {', '.join(d['keep_fp32'])}"
            + (f" (output SQNR {together:.1f} dB together)" if together is not None else ""),
            soft_wrap=True,
        )
        console.print(f"  {d['command']}", soft_wrap=True)
    else:
        console.print("no layer gains enough from fp32 to recommend it (see --min-gain)")
    if d.get("plot"):
        console.print(f"plot: {d['plot']}")


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def register(app: typer.Typer) -> None:
    app.command(
        "analyze", help="Rank int8 layers by how much they hurt accuracy; name the ones to keep fp32.\n" + EXAMPLES
    )(guarded(o.with_preprocess_options(analyze_cmd)))
