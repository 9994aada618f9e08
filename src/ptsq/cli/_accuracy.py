"""Accuracy options of ``ptsq quantize``: --observer, --cleanup/--no-cleanup, --config, and the budget loop."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ptsq.config import QuantConfig
from ptsq.errors import ConfigError

ObserverOpt = Annotated[
    str | None,
    typer.Option(
        "--observer", help="Activation ranges: minmax | moving-average | histogram | mse | percentile | entropy."
    ),
]
CleanupOpt = Annotated[
    str | None,
    typer.Option("--cleanup", help="Comma-separated clean-up steps to run (replaces the default list); 'none' = off."),
]
NoCleanupOpt = Annotated[
    list[str] | None, typer.Option("--no-cleanup", help="Turn one clean-up step off (repeatable), e.g. equalize.")
]
ConfigOpt = Annotated[
    str | None, typer.Option("--config", help="QuantConfig JSON file; options that differ from their default win.")
]
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


def build_config(
    cli: QuantConfig,
    config_file: str | None,
    observer: str | None,
    cleanup: str | None,
    no_cleanup: list[str] | None,
) -> QuantConfig:
    """--config FILE, then every option that differs from its default, then --observer/--cleanup/--no-cleanup.

    Skip rules add up: the file's rules first, then the command line's.
    """
    config = cli
    if config_file:
        path = Path(config_file)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read --config '{path}': {exc.strerror or exc}", "check the path") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config '{path}' is not valid JSON ({exc.msg})", "fix the file") from None
        if not isinstance(data, dict):
            raise ConfigError(f"--config '{path}' holds a {type(data).__name__}, not an object", "write a JSON object")
        base = QuantConfig.from_dict(data)
        default = QuantConfig()
        changed = {f.name: getattr(cli, f.name) for f in fields(QuantConfig)
                   if f.name != "skip" and getattr(cli, f.name) != getattr(default, f.name)}  # fmt: skip
        config = replace(base, **changed, skip=tuple(base.skip) + tuple(cli.skip))
    if observer is not None:
        config = replace(config, observer=observer)
    if cleanup is not None:
        steps = tuple(s.strip() for s in cleanup.split(",") if s.strip() and s.strip() != "none")
        config = replace(config, cleanup=steps)
    if no_cleanup:
        from ptsq.engines.fx_cleanup import STEPS

        unknown = [s for s in no_cleanup if s not in STEPS]
        if unknown:
            raise ConfigError(f"unknown clean-up step(s) {unknown}", f"choose from: {', '.join(STEPS)}")
        config = replace(config, cleanup=tuple(s for s in config.cleanup if s not in no_cleanup))
    return config


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
               max_images: int | None) -> Any:  # fmt: skip
    """Run :func:`ptsq.quantize_with_budget`; the trade-off goes into the manifest under ``budget``."""
    from ptsq.analysis.budget import quantize_with_budget

    evals = eval_batches(eval_data, pre, batch_size, max_images, max_drop is not None) if eval_data else None
    res = quantize_with_budget(
        model, images, eval_data=evals, max_drop=max_drop, min_agreement=min_agreement, min_sqnr=min_sqnr,
        config=config, progress=out.progress, log=out.info, preprocess=pre,
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
