"""The accuracy budget of ``ptsq quantize``: --max-drop / --min-agreement / --min-sqnr with --eval-data."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ptsq.config import QuantConfig
from ptsq.errors import ConfigError

MaxDropOpt = Annotated[
    float | None, typer.Option("--max-drop", help="Budget: top-1 drop in points on --eval-data (class sub-folders).")
]
EvalDataOpt = Annotated[
    str | None, typer.Option("--eval-data", help="Images for the budget (labelled for --max-drop).")
]
MinAgreementOpt = Annotated[
    float | None, typer.Option("--min-agreement", help="Budget: top-1 agreement with fp32 (0..1).")
]
MinSqnrOpt = Annotated[float | None, typer.Option("--min-sqnr", help="Budget: output SQNR against fp32 in dB.")]


def check_budget(max_drop: float | None, min_agreement: float | None, min_sqnr: float | None,
                 eval_data: str | None) -> None:  # fmt: skip
    """Fail before any work on budget options that cannot work."""
    if not budget_requested(max_drop, min_agreement, min_sqnr):
        if eval_data:
            raise ConfigError("--eval-data is only used with a budget", "add --max-drop, --min-agreement or --min-sqnr")
        return
    from ptsq.analysis.budget import Budget

    Budget(max_drop, min_agreement, min_sqnr)
    if max_drop is not None and not eval_data:
        raise ConfigError("--max-drop needs labelled evaluation data", "pass --eval-data DIR with class sub-folders")


def budget_requested(max_drop: float | None, min_agreement: float | None, min_sqnr: float | None) -> bool:
    return max_drop is not None or min_agreement is not None or min_sqnr is not None


def eval_batches(folder: str, pre: Any, batch_size: int, max_images: int | None, labelled: bool) -> list[Any]:
    """Decode ``folder`` into batches: ``(inputs, labels)`` when labelled, else inputs."""
    import torch

    from ptsq.data.images import decode_image
    from ptsq.errors import DataError
    from ptsq.evaluation import find_labelled

    found = find_labelled(folder, max_images=max_images)
    if labelled and found.labels is None:
        raise DataError(
            f"--max-drop needs labelled images, but '{folder}' has no class sub-folders",
            "put the images in one sub-folder per class, or use --min-agreement/--min-sqnr",
        )
    batches = []
    for i in range(0, len(found.paths), batch_size):
        x = torch.stack([decode_image(p, pre) for p in found.paths[i : i + batch_size]])
        if found.labels is not None and labelled:
            batches.append((x, torch.tensor(found.labels[i : i + batch_size])))
        else:
            batches.append(x)
    return batches


def run_budget(model: Any, images: Any, config: QuantConfig, pre: Any, out: Any, *, max_drop: float | None,
               min_agreement: float | None, min_sqnr: float | None, eval_data: str | None, batch_size: int,
               max_images: int | None, ray: str | None = None, workers: int | None = None) -> Any:  # fmt: skip
    """Run :func:`ptsq.quantize_with_budget`; the trade-off goes into the manifest under ``budget``."""
    from ptsq.analysis.budget import quantize_with_budget

    evals = eval_batches(eval_data, pre, batch_size, max_images, max_drop is not None) if eval_data else None
    res = quantize_with_budget(
        model, images, eval_data=evals, max_drop=max_drop, min_agreement=min_agreement, min_sqnr=min_sqnr,
        config=config, progress=out.progress, log=out.info, preprocess=pre, ray=ray, workers=workers,
    )  # fmt: skip
    qm = res.model
    qm.manifest["budget"] = res.to_dict()
    if not res.met:
        out.warn(f"accuracy budget ({res.budget}) not met; kept the best model found")
    return qm


def render_budget(console: Console, budget: dict[str, Any]) -> None:
    t = Table(title=f"accuracy budget: {budget['budget']} — {'met' if budget['met'] else 'NOT met'}",
              title_justify="left")  # fmt: skip
    for col in ("step", "fp32 layers", "SQNR dB", "agreement", "top-1 drop pp", "latency ms", "vs fp32", ""):
        t.add_column(col, justify="right" if col not in ("fp32 layers", "") else "left")
    for i, s in enumerate(budget["steps"]):
        names = ", ".join(s["fp32_layers"][-2:]) + (" …" if len(s["fp32_layers"]) > 2 else "")
        t.add_row(
            str(i), f"{len(s['fp32_layers'])} {names}".strip(), f"{s['sqnr_db']:.1f}",
            "-" if s.get("agreement") is None else f"{s['agreement']:.3f}",
            "-" if s.get("drop_pp") is None else f"{s['drop_pp']:.2f}",
            "-" if s.get("latency_ms") is None else f"{s['latency_ms']:.1f}",
            "-" if s.get("speedup") is None else f"{s['speedup']:.2f}x",
            s["kind"] + ("" if s["accepted"] else " (stepped back)"),
        )  # fmt: skip
    console.print(t)
    if budget["fp32_layers"]:
        console.print(f"kept in fp32 by the budget: {budget['skip_options']}", soft_wrap=True)
