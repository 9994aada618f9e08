"""ptsq eval: accuracy (labelled images) and fidelity to fp32 of models and artifacts, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ptsq.cli import _options as o
from ptsq.cli import _report
from ptsq.cli._errors import guarded
from ptsq.cli._output import Output

EXAMPLES = r"""
Examples:

  ptsq eval torchvision:resnet18 --weights r18.pth resnet18_int8.pt --data val/   # class sub-folders

  ptsq eval examples.reference.imagenet:efficientnet_lite0 lite0.pt --data photos/ --label-pattern '_(\d+)\.jpg'

  ptsq eval mypkg:net --weights w.pth net_int8.pt --data unlabelled/ --labels none --json   # fidelity only

  ptsq eval mypkg:net --weights w.pth net_int8.pt --data val/ --ray auto --workers 2   # on a local Ray instance
"""


def eval_cmd(
    models: Annotated[
        list[str], typer.Argument(help="fp32 model spec and/or ptsq artifacts; the first is the reference.")
    ],
    data: Annotated[str, typer.Option("--data", "-d", help="Folder of images (class sub-folders, or any layout).")],
    labels: Annotated[
        str, typer.Option("--labels", help="auto | folders | pattern | none (none: fidelity vs the first only).")
    ] = "auto",
    label_pattern: Annotated[
        str | None,
        typer.Option(
            "--label-pattern", help=r"Regex searched in file names; one group = class index, e.g. _(\d+)\.jpg"
        ),
    ] = None,
    class_map: Annotated[
        str | None, typer.Option("--class-map", help='Folder name -> index: JSON {"name": i} or one name per line.')
    ] = None,
    labels_from_index: Annotated[
        bool, typer.Option("--labels-from-index", help="Class folder names are the integer class indices.")
    ] = False,
    weights: o.WeightsOpt = None,
    trust_pickle: o.TrustOpt = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = 32,
    max_images: Annotated[
        int | None, typer.Option("--max-images", help="Evaluate at most this many (a reproducible subset).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="torch threads (default: torch's; with --ray: 1 per worker).")
    ] = None,
    report_file: o.ReportOpt = None,
    ray: o.RayOpt = None,
    workers: o.WorkersOpt = None,
    json_out: o.JsonOpt = False,
    quiet: o.QuietOpt = False,
    **pre: Any,
) -> None:
    import torch

    from ptsq.cli._models import load_all
    from ptsq.errors import ConfigError
    from ptsq.evaluation import evaluate, preprocess_from_artifacts

    out = Output(json_mode=json_out, quiet=quiet)
    if batch_size < 1 or (max_images is not None and max_images < 1):
        raise ConfigError("--batch-size and --max-images must be at least 1", "e.g. --batch-size 32")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads} must be at least 1", "e.g. --threads 2")
    if ray is None and workers is not None:
        raise ConfigError("--workers needs --ray", "add --ray auto (a local Ray instance), or drop --workers")
    if ray is not None:
        from ptsq.distributed.cluster import check_workers, require_ray

        check_workers(workers)
        require_ray()  # before loading models: a missing extra is the first thing to say
    elif threads is not None:
        torch.set_num_threads(threads)
    report_path = _report.check_path(report_file, (*models, data))
    items = load_all(models, weights, trust_pickle)
    mods = [i.module for i in items]
    names = [i.label for i in items]
    kinds = [i.kind for i in items]
    model_default = next((i.preprocess for i in items if i.preprocess is not None), None)
    default = preprocess_from_artifacts(mods, names) or model_default
    pre = o.preprocess_from(default, pre)
    res = evaluate(
        mods, data, preprocess=pre, names=names, kinds=kinds, labels=labels.lower(), label_pattern=label_pattern,
        class_map=class_map, labels_from_index=labels_from_index, batch_size=batch_size, max_images=max_images,
        progress=out.progress, ray=ray, workers=workers, threads=threads or 1,
    )  # fmt: skip
    if res.skipped:
        shown = ", ".join(f"{Path(p).name} ({r})" for p, r in res.skipped[:5])
        out.warn(f"skipped {len(res.skipped)} image(s) that could not be read: {shown}")
    if res.ignored:
        out.warn(f"ignored {res.ignored} file(s) whose names do not match --label-pattern")
    result = res.to_dict()
    _report.write(out, report_path, result, artifacts=[s for s, i in zip(models, items) if i.kind != "fp32"],
                  eval=result)  # fmt: skip
    out.result(result, render)


def _f(v: Any, fmt: str = ".4f") -> str:
    return "-" if v is None else format(v, fmt)


def render(console: Console, d: dict[str, Any]) -> None:
    dd, p = d["data"], d["preprocess"]
    lab = {"folders": "class folders", "pattern": "file-name pattern", "none": "none (fidelity only)"}[dd["labels"]]
    title = (
        f"ptsq eval — {dd['images']} images from {dd['source']}; labels: {lab}"
        + (f", {dd['classes']} classes" if dd.get("classes") else "")
        + f"; input {p['size'][0]}x{p['size'][1]} {p['channels']}"
    )
    t = Table(title=title, title_justify="left")
    labelled = dd["labels"] != "none"
    cols = ["model", "kind"] + (["top-1", "top-5"] if labelled else [])
    cols += ["top-1 agree", "top-5 overlap", "KL", "SQNR dB", "cosine"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("model", "kind") else "right")
    for m in d["models"]:
        f = m["fidelity"] or {}
        row = [m["label"], m["kind"]] + ([_f(m["top1"]), _f(m["top5"])] if labelled else [])
        sq = f.get("sqnr_db")
        sq_text = "-" if sq is None else (f"{sq:.1f}" if isinstance(sq, float) else str(sq))
        row += [_f(f.get("top1_agreement")), _f(f.get("top5_overlap")), _f(f.get("kl"), ".5f"), sq_text,
                _f(f.get("cosine"), ".5f")]  # fmt: skip
        t.add_row(*row)
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command("eval", help="Accuracy and fidelity to fp32 of models and artifacts on images.\n" + EXAMPLES)(
        guarded(o.with_preprocess_options(eval_cmd))
    )
