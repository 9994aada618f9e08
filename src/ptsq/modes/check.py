"""After convert: compare int8 with fp32 on held-back data, and name likely culprits when it is poor."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ptsq.config import QuantConfig
from ptsq.engines.base import EngineResult
from ptsq.engines.common import run_with_hooks
from ptsq.errors import QuantizationWarning
from ptsq.fidelity import Fidelity, compare, flatten_outputs, sqnr_db

# A GOOD/POOR verdict needs at least this many held-back samples: on 32, one disagreeing sample moves
# agreement by 3 points and its 95 % interval is still ~ +-10 points wide; on the 4 leftovers of a last
# batch it swung EfficientNet-Lite1 to "POOR, agreement 0.50" while 20 labelled photos agreed 20/20.
MIN_VERDICT_SAMPLES = 32
MIN_AGREEMENT_SAMPLES = MIN_VERDICT_SAMPLES  # the name earlier versions exported


def capture_outputs(model: nn.Module, names: Sequence[str], args: tuple[Any, ...]) -> dict[str, torch.Tensor]:
    """The first output tensor of each named submodule when ``model`` runs ``args``."""
    outs: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Any:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            tensors = flatten_outputs(out)
            if tensors:
                outs[name] = tensors[0].detach().float().clone()  # in-place activations follow

        return hook

    run_with_hooks(model, args, {model.get_submodule(n): keep(n) for n in names})
    return outs


def culprits(
    observed: nn.Module, quantized: nn.Module, layer_names: Sequence[str], args: tuple[Any, ...], top: int = 3
) -> list[tuple[str, float]]:
    """Layers where output SQNR against fp32 falls the most, in execution order; (name, SQNR dB).

    ``observed`` is the calibrated fp32 model with observers (fused modules share names with the
    int8 model), so each int8 layer is compared with the fp32 value at the same point of the graph.
    """
    names = [n for n in layer_names if _has(observed, n) and _has(quantized, n)]
    return rank_culprits(names, capture_outputs(observed, names, args), capture_outputs(quantized, names, args), top)


def rank_culprits(
    names: Sequence[str], ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor], top: int = 3
) -> list[tuple[str, float]]:
    """:func:`culprits` from layer outputs already taken: (fp32, int8) by layer name."""
    scores: list[tuple[str, float, float]] = []
    prev = float("inf")
    for name in names:
        if name in ref and name in got and ref[name].shape == got[name].shape:
            s = sqnr_db(ref[name], got[name])
            drop = (prev - s) if prev != float("inf") else (40.0 - s)
            scores.append((name, s, drop))
            prev = s
    scores.sort(key=lambda t: t[2], reverse=True)
    return [(n, s) for n, s, d in scores[:top] if d > 0]


def _has(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _agreement(fid: Fidelity) -> float | None:
    return fid.clear_agreement if fid.output == "scores" else fid.decision_agreement


def self_check(
    fp32: nn.Module, result: EngineResult, batches: list[tuple[Any, ...]], config: QuantConfig, *, in_sample: bool
) -> dict[str, Any]:
    """int8 vs fp32 on ``batches``: the figures that fit the output (``output``: scores, probabilities or
    values), agreement as k of n with its 95 % interval, and a verdict only from enough held-back samples
    (``verdict``: good, poor, too few samples, not compared); the likely culprits when it is poor."""
    try:
        fid = compare(fp32, result.module, batches, config.check_output)
    except ValueError as exc:  # variable-size outputs (e.g. detections): nothing to compare element-wise
        fid = Fidelity(samples=0, sqnr_db=math.nan, cosine=math.nan)
        result.notes.append(f"self-check skipped: {exc} (variable-size outputs, such as detections)")
    check: dict[str, Any] = {**fid.to_dict(), "batches": len(batches), "held_out": not in_sample,
                             "min_samples": MIN_VERDICT_SAMPLES}  # fmt: skip
    agreement = _agreement(fid)
    # class scores are judged by agreement (what a classifier's user sees); the SQNR of logits says
    # nothing about their ranking. Everything else by SQNR, and probabilities by their decisions too.
    low_sqnr = fid.sqnr_db < config.warn_sqnr_db and fid.output != "scores"
    poor = low_sqnr or (agreement is not None and agreement < config.warn_agreement)
    if not fid.samples:
        check["passed"], check["verdict"] = None, "not compared"
    elif in_sample or fid.samples < MIN_VERDICT_SAMPLES:
        check["passed"], check["verdict"] = None, "too few samples"
    else:
        check["passed"], check["verdict"] = not poor, ("poor" if poor else "good")
    layers = result.debug.get("float_layers")  # PT2E: no modules to hook, it taps its graphs itself
    if poor and fid.samples and (layers is not None or "observed" in result.debug):
        names = [r.name for r in result.precision if r.precision == "int8"]
        try:
            found = (
                rank_culprits(names, *layers.layer_outputs(names, batches[0]))
                if layers is not None
                else culprits(result.debug["observed"], result.module, names, batches[0])
            )
            check["culprits"] = [{"name": n, "sqnr_db": round(s, 2)} for n, s in found]
        except Exception:  # culprit search is best effort; the warning itself stands
            check["culprits"] = []
    return check


def figures(check: dict[str, Any]) -> str:
    """The self-check in one line: SQNR, cosine, agreement as k/n with its interval, on how many samples."""
    if check.get("sqnr_db") is None:
        return "not compared: the outputs vary in size (see notes)"
    text = f"SQNR {check['sqnr_db']:.1f} dB, cosine {check['cosine']:.4f}"
    if check.get("agree") is not None and check.get("compared"):
        lo, hi = check.get("agreement_interval") or (0.0, 1.0)
        n = check["compared"]
        if check.get("output") == "scores":
            text += f", top-1 agreement {check['agree']}/{n}"
            if check.get("clear_agree") is not None and check["clear_agree"] != check["agree"]:
                text += f" ({check['clear_agree']}/{n} counting near-ties as agreeing)"
        else:
            text += f", decisions at 0.5 agree {check['agree']}/{n}"
        text += f" [95 % {lo:.2f}-{hi:.2f}]"
    if check.get("mean_abs_error") is not None:
        text += f", mean |Δp| {check['mean_abs_error']:.4f}"
    where = "held-back" if check.get("held_out") else "calibration (not held-back)"
    return text + f" on {check['samples']} {where} samples"


def warn_if_poor(check: dict[str, Any]) -> None:
    """A :class:`QuantizationWarning` naming the culprits when the self-check failed, or saying why it
    could not judge (too few held-back samples)."""
    if check.get("verdict") == "too few samples":
        warnings.warn(
            f"the self-check compared int8 with fp32 on only {check['samples']} "
            f"{'held-back' if check.get('held_out') else 'calibration'} sample(s); a verdict needs "
            f"{check.get('min_samples', MIN_VERDICT_SAMPLES)}, so there is none. Give more calibration data "
            "(or set check_samples / --check-samples).",
            QuantizationWarning,
            stacklevel=3,
        )
        return
    if check.get("passed") is not False:
        return
    names = ", ".join(c["name"] for c in check.get("culprits", [])) or "unknown"
    warnings.warn(
        f"int8 output is far from fp32 ({figures(check)}); likely culprits: {names}. "
        "Keep them in fp32 with skip rules, or check the calibration data.",
        QuantizationWarning,
        stacklevel=3,
    )


__all__ = [
    "MIN_AGREEMENT_SAMPLES",
    "MIN_VERDICT_SAMPLES",
    "capture_outputs",
    "culprits",
    "figures",
    "rank_culprits",
    "self_check",
    "warn_if_poor",
]
