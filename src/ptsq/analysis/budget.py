"""Accuracy budget: quantize, evaluate, and put the most harmful layers back to fp32 until the budget holds.

1. Quantize with the given config and evaluate int8 against fp32 on the evaluation batches
   (labelled: top-1 drop in points; unlabelled: top-1 agreement and/or output SQNR).
2. Rank the int8 layers by what keeping each alone in fp32 gains (:mod:`ptsq.analysis.sensitivity`,
   calibrated observers reused, no re-calibration).
3. Greedily move one group of layers at a time to fp32, most harmful first, evaluating each step;
   a move that makes the metric worse is stepped back. Stop when the budget holds.
4. Re-quantize for real with ``--skip name:...`` rules for the chosen layers and evaluate that model:
   it is the one returned. If the budget cannot be met, the best model found is returned and
   ``met`` is False.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ptsq.analysis.sensitivity import rank_layers, with_float_layers
from ptsq.calibration import as_args
from ptsq.config import QuantConfig, SkipRule
from ptsq.errors import ConfigError, DataError
from ptsq.fidelity import FidelityMeter


@dataclass
class Budget:
    """At least one of: max top-1 drop in points (needs labels), min top-1 agreement, min output SQNR (dB)."""

    max_drop: float | None = None
    min_agreement: float | None = None
    min_sqnr: float | None = None

    def __post_init__(self) -> None:
        if self.max_drop is None and self.min_agreement is None and self.min_sqnr is None:
            raise ConfigError("no accuracy budget given", "pass --max-drop, --min-agreement or --min-sqnr")
        if self.max_drop is not None and not 0 <= self.max_drop <= 100:
            raise ConfigError(f"--max-drop {self.max_drop} must be in [0, 100] (points)", "e.g. --max-drop 1.0")
        if self.min_agreement is not None and not 0 < self.min_agreement <= 1:
            raise ConfigError(f"--min-agreement {self.min_agreement} must be in (0, 1]", "e.g. --min-agreement 0.98")

    def met(self, m: dict[str, Any]) -> bool:
        ok = True
        if self.max_drop is not None:
            ok &= m.get("drop_pp") is not None and m["drop_pp"] <= self.max_drop + 1e-9
        if self.min_agreement is not None:
            ok &= m.get("agreement") is not None and m["agreement"] >= self.min_agreement - 1e-9
        if self.min_sqnr is not None:
            ok &= m["sqnr_db"] >= self.min_sqnr
        return bool(ok)

    def score(self, m: dict[str, Any]) -> tuple[float, ...]:
        """Larger is better; compares steps on the budget's own metrics first, SQNR last."""
        keys: list[float] = []
        if self.max_drop is not None:
            keys.append(-(m.get("drop_pp") or 0.0))
        if self.min_agreement is not None:
            keys.append(m.get("agreement") or 0.0)
        keys.append(m["sqnr_db"] if math.isfinite(m["sqnr_db"]) else 999.0)
        return tuple(keys)

    def describe(self) -> str:
        parts = []
        if self.max_drop is not None:
            parts.append(f"top-1 drop <= {self.max_drop} pp")
        if self.min_agreement is not None:
            parts.append(f"agreement >= {self.min_agreement}")
        if self.min_sqnr is not None:
            parts.append(f"SQNR >= {self.min_sqnr} dB")
        return ", ".join(parts)


@dataclass
class Step:
    fp32_layers: list[str]
    kind: str  # "int8" (a real quantized model) or "estimate" (layers swapped to fp32 in the int8 graph)
    metrics: dict[str, Any]
    latency_ms: float | None = None
    speedup: float | None = None
    accepted: bool = True


@dataclass
class BudgetResult:
    model: Any  # the QuantizedModel returned
    met: bool
    budget: str
    steps: list[Step] = field(default_factory=list)
    fp32_layers: list[str] = field(default_factory=list)
    fp32_latency_ms: float | None = None

    def skip_options(self) -> str:
        return " ".join(f"--skip name:{n}" for n in self.fp32_layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "met": self.met,
            "fp32_layers": self.fp32_layers,
            "skip_options": self.skip_options(),
            "fp32_latency_ms": self.fp32_latency_ms,
            "steps": [
                {
                    "fp32_layers": s.fp32_layers,
                    "kind": s.kind,
                    **s.metrics,
                    "latency_ms": s.latency_ms,
                    "speedup": s.speedup,
                    "accepted": s.accepted,
                }
                for s in self.steps
            ],
        }


def _split(batch: Any) -> tuple[tuple[Any, ...], torch.Tensor | None]:
    if isinstance(batch, (list, tuple)) and len(batch) == 2 and isinstance(batch[1], torch.Tensor):
        if not batch[1].is_floating_point() and batch[1].dim() == 1:
            return as_args(batch[0]), batch[1]
    return as_args(batch), None


class Evaluator:
    """fp32 reference outputs computed once; :meth:`__call__` scores a candidate model."""

    def __init__(self, fp32: nn.Module, batches: Sequence[Any]) -> None:
        pairs = [_split(b) for b in batches]
        if not pairs:
            raise DataError("the evaluation data is empty", "give --eval-data with images, or more calibration data")
        self.inputs = [p[0] for p in pairs]
        labels = [p[1] for p in pairs]
        self.labels = torch.cat(labels) if all(lab is not None for lab in labels) else None
        with torch.inference_mode():
            self.ref = [fp32(*a) for a in self.inputs]
        self.fp32_top1 = self._top1(self.ref) if self.labels is not None else None

    def _top1(self, outs: list[Any]) -> float:
        logits = torch.cat([o if isinstance(o, torch.Tensor) else o[0] for o in outs]).float()
        return float((logits.argmax(1) == self.labels).double().mean())

    def __call__(self, model: Callable[..., Any]) -> dict[str, Any]:
        with torch.inference_mode():
            outs = [model(*a) for a in self.inputs]
        outs = [o.dequantize() if isinstance(o, torch.Tensor) and o.is_quantized else o for o in outs]
        meter = FidelityMeter()
        for r, g in zip(self.ref, outs):
            meter.update(r, g)
        fid = meter.result()
        m: dict[str, Any] = {"sqnr_db": fid.sqnr_db, "agreement": fid.top1_agreement, "samples": fid.samples}
        if self.labels is not None:
            top1 = self._top1(outs)
            m.update(fp32_top1=self.fp32_top1, top1=top1, drop_pp=100 * (self.fp32_top1 - top1))
        return m


def _latency(models: list[tuple[str, Callable[..., Any]]], example: tuple[Any, ...], runs: int) -> list[float]:
    from ptsq.bench import Candidate, benchmark

    args = tuple(a[:1].contiguous() if isinstance(a, torch.Tensor) and a.dim() else a for a in example)
    res = benchmark(
        [Candidate(label, fn, None, "fp32" if i == 0 else "int8") for i, (label, fn) in enumerate(models)],
        lambda bs: args, threads=(1,), batch_sizes=(1,), warmup=max(2, runs // 5), runs=runs, progress=False,
    )  # fmt: skip
    return [t.median_ms for t in res.timings]


def quantize_with_budget(
    model: nn.Module,
    calibration: Iterable[Any],
    *,
    eval_data: Iterable[Any] | None = None,
    max_drop: float | None = None,
    min_agreement: float | None = None,
    min_sqnr: float | None = None,
    config: QuantConfig | None = None,
    group: int = 1,
    max_steps: int = 12,
    latency_runs: int = 10,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    **quantize_kwargs: Any,
) -> BudgetResult:
    """Quantize ``model`` to int8 and keep the fewest harmful layers in fp32 that meet the budget.

    ``eval_data``: batches of inputs, or ``(inputs, labels)`` for ``max_drop``. Without it, the last
    quarter of the calibration batches (at least one) is held back and used for evaluation.
    ``latency_runs=0`` skips timing.
    """
    from ptsq.api import quantize

    budget = Budget(max_drop, min_agreement, min_sqnr)
    config = config or QuantConfig()
    if group < 1:
        raise ConfigError(f"group {group} must be at least 1", "e.g. group=1")
    calib = list(calibration)
    if eval_data is None:
        if max_drop is not None:
            raise ConfigError(
                "--max-drop needs labelled evaluation data", "pass --eval-data DIR with class sub-folders"
            )
        if len(calib) < 2:
            raise DataError("too few calibration batches to hold some back", "pass --eval-data or more images")
        k = max(1, len(calib) // 4)
        calib, eval_batches = calib[:-k], calib[-k:]
    else:
        eval_batches = list(eval_data)
    was = model.training
    model.eval()
    say = log or (lambda _m: None)
    try:
        evaluate = Evaluator(model, eval_batches)
        if budget.max_drop is not None and evaluate.labels is None:
            raise DataError("--max-drop needs labels in the evaluation data", "use a folder with class sub-folders")
        qm = quantize(model, calib, config=config, progress=progress, **quantize_kwargs)
        converted, observed = qm.result.module, qm.result.debug.get("observed")
        timing = latency_runs > 0
        first = evaluate(converted)
        lat = _latency([("fp32", model), ("int8", converted)], evaluate.inputs[0], latency_runs) if timing else None
        fp32_ms = lat[0] if lat else None
        steps = [Step([], "int8", first, lat[1] if lat else None, (lat[0] / lat[1]) if lat else None)]
        say(f"all int8: {_fmt(first)}")
        if budget.met(first) or observed is None:
            return BudgetResult(qm, budget.met(first), budget.describe(), steps, [], fp32_ms)

        ops = {r.name: r.op for r in qm.result.precision}
        _, _, ranked = rank_layers(model, converted, observed, evaluate.inputs, ops)
        candidates = [r.name for r in ranked if r.gain_db > 0]
        chosen: list[str] = []
        best = first
        for i in range(0, min(len(candidates), max_steps * group), group):
            trial = chosen + candidates[i : i + group]
            m = evaluate(with_float_layers(converted, observed, trial))
            better = budget.score(m) >= budget.score(best)
            steps.append(Step(trial, "estimate", m, accepted=better))
            say(f"{'keep' if better else 'step back'} fp32 {candidates[i : i + group]}: {_fmt(m)}")
            if better:
                chosen, best = trial, m
                if budget.met(m):
                    break
        if not chosen:
            return BudgetResult(qm, False, budget.describe(), steps, [], fp32_ms)

        # the real thing: re-quantize with skip rules and measure it
        rules = tuple(config.skip) + tuple(SkipRule("name", n) for n in chosen)
        final_qm = quantize(model, calib, config=replace(config, skip=rules), progress=progress, **quantize_kwargs)
        final = evaluate(final_qm.module)
        lat = (
            _latency([("fp32", model), ("int8", final_qm.module)], evaluate.inputs[0], latency_runs) if timing else None
        )
        steps.append(Step(list(chosen), "int8", final, lat[1] if lat else None, (lat[0] / lat[1]) if lat else None))
        say(f"re-quantized with {len(chosen)} layer(s) in fp32: {_fmt(final)}")
        if budget.score(final) >= budget.score(first):
            return BudgetResult(final_qm, budget.met(final), budget.describe(), steps, list(chosen), fp32_ms)
        return BudgetResult(qm, budget.met(first), budget.describe(), steps, [], fp32_ms)
    finally:
        model.train(was)


def _fmt(m: dict[str, Any]) -> str:
    parts = [f"SQNR {m['sqnr_db']:.1f} dB"]
    if m.get("agreement") is not None:
        parts.append(f"agreement {m['agreement']:.3f}")
    if m.get("drop_pp") is not None:
        parts.append(f"top-1 {m['top1']:.4f} (drop {m['drop_pp']:.2f} pp)")
    return ", ".join(parts)
