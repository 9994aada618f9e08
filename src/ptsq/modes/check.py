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
from ptsq.errors import QuantizationWarning
from ptsq.fidelity import Fidelity, compare, flatten_outputs, sqnr_db

MIN_AGREEMENT_SAMPLES = 32  # top-1 agreement on fewer samples is noise; SQNR is meaningful on any count


def capture_outputs(model: nn.Module, names: Sequence[str], args: tuple[Any, ...]) -> dict[str, torch.Tensor]:
    """The first output tensor of each named submodule when ``model`` runs ``args``."""
    outs: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:
        mod = model.get_submodule(name)

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            tensors = flatten_outputs(out)
            if tensors:
                outs[name] = tensors[0].detach().float().clone()  # in-place activations follow

        hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(*args)
    finally:
        for h in hooks:
            h.remove()
    return outs


def culprits(
    observed: nn.Module, quantized: nn.Module, layer_names: Sequence[str], args: tuple[Any, ...], top: int = 3
) -> list[tuple[str, float]]:
    """Layers where output SQNR against fp32 falls the most, in execution order; (name, SQNR dB).

    ``observed`` is the calibrated fp32 model with observers (fused modules share names with the
    int8 model), so each int8 layer is compared with the fp32 value at the same point of the graph.
    """
    names = [n for n in layer_names if _has(observed, n) and _has(quantized, n)]
    ref = capture_outputs(observed, names, args)
    got = capture_outputs(quantized, names, args)
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


def self_check(
    fp32: nn.Module, result: EngineResult, batches: list[tuple[Any, ...]], config: QuantConfig, *, in_sample: bool
) -> dict[str, Any]:
    """int8 vs fp32 on ``batches``: the figures, whether it passed, and the likely culprits when it did not."""
    try:
        fid = compare(fp32, result.module, batches)
    except ValueError as exc:  # variable-size outputs (e.g. detections): nothing to compare element-wise
        fid = Fidelity(samples=0, sqnr_db=math.nan, cosine=math.nan)
        result.notes.append(f"self-check skipped: {exc} (variable-size outputs, such as detections)")
    check: dict[str, Any] = {**fid.to_dict(), "batches": len(batches), "held_out": not in_sample}
    poor = fid.sqnr_db < config.warn_sqnr_db or (
        fid.top1_agreement is not None
        and fid.samples >= MIN_AGREEMENT_SAMPLES
        and fid.top1_agreement < config.warn_agreement
    )
    check["passed"] = not poor if fid.samples else None  # None: outputs could not be compared
    if poor and "observed" in result.debug:
        names = [r.name for r in result.precision if r.precision == "int8"]
        try:
            check["culprits"] = [
                {"name": n, "sqnr_db": round(s, 2)}
                for n, s in culprits(result.debug["observed"], result.module, names, batches[0])
            ]
        except Exception:  # culprit search is best effort; the warning itself stands
            check["culprits"] = []
    return check


def warn_if_poor(check: dict[str, Any]) -> None:
    """A :class:`QuantizationWarning` naming the culprits when the self-check failed."""
    if check.get("passed") is not False:
        return
    names = ", ".join(c["name"] for c in check.get("culprits", [])) or "unknown"
    agree = f", top-1 agreement {check['top1_agreement']:.2f}" if check.get("top1_agreement") is not None else ""
    warnings.warn(
        f"int8 output is far from fp32 (SQNR {check['sqnr_db']:.1f} dB{agree}); likely culprits: {names}. "
        "Keep them in fp32 with skip rules, or check the calibration data.",
        QuantizationWarning,
        stacklevel=3,
    )


__all__ = ["MIN_AGREEMENT_SAMPLES", "capture_outputs", "culprits", "self_check", "warn_if_poor"]
