"""Accuracy budget: quantize, evaluate, and put the most harmful layers back to fp32 until the budget holds.

1. Quantize with the given config and evaluate int8 against fp32 on the evaluation batches
   (labelled: top-1 drop in points; unlabelled: top-1 agreement and/or output SQNR).
2. Rank the int8 layers by what keeping each alone in fp32 gains on the budget's own score
   (calibrated observers reused, no re-calibration: :class:`ptsq.analysis.sensitivity.FloatLayers`).
3. Greedily move one group of layers at a time to fp32, most harmful first, evaluating each step;
   a move that does not improve the score is stepped back. Stop when the budget holds.
4. Re-quantize for real with ``--skip name:...`` rules for the chosen layers and evaluate that model.
   Re-calibration moves the result a little, so if the real model misses the budget, rank again from
   it (up to ``rounds`` times). The best real model is returned; if the budget cannot be met,
   ``met`` is False.

Agreement is a count: on a few samples one near-tie decides it, and single layers rarely flip it, so
steps are scored on agreement (or drop) first, then on the *margin deficit* — how far, in logits, the
int8 model is from giving each sample fp32's top-1 class (0 when every sample agrees) — then on SQNR.
The deficit moves with every layer, which gives the greedy search a direction where agreement is flat.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ptsq.algorithms.fallback import Trial, greedy_fallback
from ptsq.analysis.sensitivity import FloatLayers, check_engine, float_layers, per_layer
from ptsq.calibration import as_args
from ptsq.config import QuantConfig, SkipRule
from ptsq.errors import ConfigError, DataError
from ptsq.fidelity import FidelityMeter
from ptsq.progress import task


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
        if keys and m.get("margin_deficit") is not None:
            keys.append(-m["margin_deficit"])
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


def margin_deficit(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Mean over samples of how far ``test`` is from ranking fp32's top-1 class first (0 when it does)."""
    top = ref.argmax(1, keepdim=True)
    own = test.gather(1, top)[:, 0]
    others = test.scatter(1, top, float("-inf")).amax(1)
    gap = (others - own).clamp(min=0).double()
    # an exact tie (quantized logits) that argmax resolves the other way still counts as a miss
    gap = torch.where(test.argmax(1) != top[:, 0], gap.clamp(min=1e-6), gap)
    return float(gap.mean())


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
        return float((_scores(outs).argmax(1) == self.labels).double().mean())

    def __call__(self, model: Callable[..., Any]) -> dict[str, Any]:
        with torch.inference_mode():
            outs = [model(*a) for a in self.inputs]
        outs = [o.dequantize() if isinstance(o, torch.Tensor) and o.is_quantized else o for o in outs]
        meter = FidelityMeter()
        for r, g in zip(self.ref, outs):
            meter.update(r, g)
        fid = meter.result()
        m: dict[str, Any] = {"sqnr_db": fid.sqnr_db, "agreement": fid.top1_agreement, "samples": fid.samples}
        if fid.top1_agreement is not None:
            m["margin_deficit"] = margin_deficit(_scores(self.ref), _scores(outs))
        if self.labels is not None:
            top1 = self._top1(outs)
            m.update(fp32_top1=self.fp32_top1, top1=top1, drop_pp=100 * (self.fp32_top1 - top1))
        return m


def _scores(outs: list[Any]) -> torch.Tensor:
    return torch.cat([o if isinstance(o, torch.Tensor) else o[0] for o in outs]).float()


def _latency(models: list[tuple[str, Callable[..., Any]]], example: tuple[Any, ...], runs: int) -> list[float]:
    from ptsq.bench import Candidate, benchmark

    args = tuple(a[:1].contiguous() if isinstance(a, torch.Tensor) and a.dim() else a for a in example)
    res = benchmark(
        [Candidate(label, fn, None, "fp32" if i == 0 else "int8") for i, (label, fn) in enumerate(models)],
        lambda bs: args, threads=(1,), batch_sizes=(1,), warmup=max(2, runs // 5), runs=runs, progress=False,
    )  # fmt: skip
    return [t.median_ms for t in res.timings]


def _hold_back(
    calib: list[Any], eval_data: Iterable[Any] | None, max_drop: float | None
) -> tuple[list[Any], list[Any]]:
    """(calibration batches, evaluation batches): without ``eval_data`` the last quarter is held back."""
    if eval_data is not None:
        return calib, list(eval_data)
    if max_drop is not None:
        raise ConfigError("--max-drop needs labelled evaluation data", "pass --eval-data DIR with class sub-folders")
    if len(calib) < 2:
        raise DataError("too few calibration batches to hold some back", "pass --eval-data or more images")
    k = max(1, len(calib) // 4)
    return calib[:-k], calib[-k:]


class _Measure:
    """A budget step from a real int8 model: the budget's metrics, and its latency against fp32."""

    def __init__(self, model: nn.Module, evaluate: Evaluator, runs: int) -> None:
        self.model, self.evaluate, self.runs = model, evaluate, runs
        self.fp32_ms: list[float] = []

    def __call__(self, layers: list[str], cand: Any) -> Step:
        m = self.evaluate(cand.module)
        if self.runs <= 0:
            return Step(list(layers), "int8", m)
        fp, i8 = _latency([("fp32", self.model), ("int8", cand.module)], self.evaluate.inputs[0], self.runs)
        self.fp32_ms.append(fp)
        return Step(list(layers), "int8", m, i8, fp / i8)


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
    rounds: int = 3,
    latency_runs: int = 10,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    ray: Any = None,
    workers: int | None = None,
    **quantize_kwargs: Any,
) -> BudgetResult:
    """Quantize ``model`` to int8 and keep the fewest harmful layers in fp32 that meet the budget.

    ``eval_data``: batches of inputs, or ``(inputs, labels)`` for ``max_drop``. Without it, the last
    quarter of the calibration batches (at least one) is held back and used for evaluation.
    ``max_steps`` groups are tried per round; ``rounds`` re-quantizations at most. ``latency_runs=0`` skips timing.
    ``ray``: ``"auto"``, a cluster address or a Cluster: each round's per-layer trials run as Ray tasks
    (``workers`` at once); the steps and the model chosen are the same as without.
    """
    from ptsq.distributed.cluster import using
    from ptsq.modes.static import quantize_static

    budget = Budget(max_drop, min_agreement, min_sqnr)
    config = config or QuantConfig()
    check_engine("the accuracy budget", config, ray)
    if group < 1:
        raise ConfigError(f"group {group} must be at least 1", "e.g. group=1")
    calib, eval_batches = _hold_back(list(calibration), eval_data, max_drop)
    was = model.training
    model.eval()
    say = log or (lambda _m: None)
    connection = contextlib.ExitStack()
    try:
        cluster = connection.enter_context(using(ray, workers))
        evaluate = Evaluator(model, eval_batches)
        if budget.max_drop is not None and evaluate.labels is None:
            raise DataError("--max-drop needs labels in the evaluation data", "use a folder with class sub-folders")
        qm = quantize_static(model, calib, config, progress=progress, **quantize_kwargs)
        measured = _Measure(model, evaluate, latency_runs)

        first = measured([], qm)
        steps = [first]
        say(f"all int8: {_fmt(first.metrics)}")
        best_qm, best, best_layers = qm, first.metrics, []
        current, current_layers, current_m = qm, [], first.metrics
        for _ in range(rounds):
            layers = float_layers(current.result)
            if budget.met(best) or layers is None:
                break
            chosen, tried = _greedy(
                budget, evaluate, current.result.module, layers, current_m, current_layers, max_steps, group,
                progress, say, cluster,
            )  # fmt: skip
            steps += tried
            if not chosen:
                break
            # the real thing: re-quantize with skip rules and measure it
            fp32_layers = current_layers + chosen
            rules = tuple(config.skip) + tuple(SkipRule("name", n) for n in fp32_layers)
            cand = quantize_static(model, calib, replace(config, skip=rules), progress=progress, **quantize_kwargs)
            step = measured(fp32_layers, cand)
            step.accepted = budget.score(step.metrics) > budget.score(best)
            steps.append(step)
            say(f"re-quantized with {len(fp32_layers)} layer(s) in fp32: {_fmt(step.metrics)}")
            if step.accepted:
                best_qm, best, best_layers = cand, step.metrics, fp32_layers
            # re-calibration moved the result: rank again from the real model
            current, current_layers, current_m = cand, fp32_layers, step.metrics
        fp_ms = measured.fp32_ms[0] if measured.fp32_ms else None
        return BudgetResult(best_qm, budget.met(best), budget.describe(), steps, list(best_layers), fp_ms)
    finally:
        connection.close()
        model.train(was)


def _greedy(
    budget: Budget,
    evaluate: Evaluator,
    converted: nn.Module,
    layers: FloatLayers,
    base: dict[str, Any],
    prefix: list[str],
    max_steps: int,
    group: int,
    progress: bool,
    say: Callable[[str], None],
    cluster: Any = None,
) -> tuple[list[str], list[Step]]:
    """Layers to add to fp32, estimated in the int8 graph: ranked by their solo score (as Ray tasks on
    ``cluster`` if given), then greedily."""
    names = layers.names()
    with task("ranking layers", len(names), progress) as update:
        done = [0]

        def step(n: int) -> None:
            done[0] += n
            update(done[0])

        solo = per_layer(solo_score, (budget, evaluate, layers), names, cluster=cluster, step=step)
    swapped_in = layers.with_float([])  # PT2E: the reference program the swaps run in, not the compiled one
    base_score = budget.score(base if swapped_in is converted else evaluate(swapped_in))
    candidates = sorted((n for n in names if solo[n] > base_score), key=lambda n: solo[n], reverse=True)
    say(f"{len(candidates)} of {len(names)} int8 layers improve the score alone")

    def told(t: Trial[dict[str, Any]]) -> None:
        say(f"{'keep' if t.accepted else 'step back'} fp32 {t.layers[-group:]}: {_fmt(t.result)}")

    chosen, trials = greedy_fallback(
        candidates, lambda chosen: evaluate(layers.with_float(chosen)), budget.score,
        budget.met, base_score=base_score, limit=max_steps, group=group, on_trial=told,
    )  # fmt: skip
    return chosen, [Step(prefix + t.layers, "estimate", t.result, accepted=t.accepted) for t in trials]


def solo_score(ctx: tuple[Budget, Evaluator, FloatLayers], name: str) -> tuple[float, ...]:
    """One ranking job: the budget's score with layer ``name`` alone in fp32 (estimated in the int8 graph)."""
    budget, evaluate, layers = ctx
    return budget.score(evaluate(layers.with_float([name])))


def _fmt(m: dict[str, Any]) -> str:
    parts = [f"SQNR {m['sqnr_db']:.1f} dB"]
    if m.get("agreement") is not None:
        parts.append(f"agreement {m['agreement']:.3f} (margin deficit {m['margin_deficit']:.3f})")
    if m.get("drop_pp") is not None:
        parts.append(f"top-1 {m['top1']:.4f} (drop {m['drop_pp']:.2f} pp)")
    return ", ".join(parts)
