"""After convert: compare int8 with fp32 on held-back data, and name likely culprits when it is poor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ptsq.fidelity import flatten_outputs, sqnr_db


def _capture(model: nn.Module, names: Sequence[str], args: tuple[Any, ...]) -> dict[str, torch.Tensor]:
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
    ref = _capture(observed, names, args)
    got = _capture(quantized, names, args)
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
