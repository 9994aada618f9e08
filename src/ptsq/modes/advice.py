"""Which quantization mode fits a model: count multiply-accumulates per layer type on one example input.

- static PTQ fits models whose compute is mostly convolutions (activation ranges are stable per channel
  across inputs, so calibrated ranges hold);
- dynamic fits models whose compute is mostly Linear over tokens or RNN steps (weights dominate, and
  activation ranges vary per input and per token, so they are measured at run time);
- a conv model in dynamic mode quantizes nothing useful.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

RNN_TYPES = (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell)
STATIC_FIT = 0.5  # conv share of MACs above which static mode is the natural choice
DYNAMIC_MIN = 0.2  # dynamic mode quantizes less than this share of MACs: the wrong tool
TOKEN_LINEAR = 0.8  # Linear/RNN share above which static mode is a poor fit (token-wise ranges)


@dataclass
class ComputeProfile:
    """Multiply-accumulates (one example input) by family: conv, linear, rnn, and whether Linear sees tokens."""

    macs: dict[str, int] = field(default_factory=lambda: {"conv": 0, "linear": 0, "rnn": 0})
    params: dict[str, int] = field(default_factory=lambda: {"conv": 0, "linear": 0, "rnn": 0, "other": 0})
    token_linear: bool = False  # some Linear runs on (batch, tokens, features) inputs

    @property
    def total(self) -> int:
        return sum(self.macs.values())

    def share(self, *kinds: str) -> float:
        return sum(self.macs[k] for k in kinds) / self.total if self.total else 0.0


def _rnn_macs(mod: nn.Module, inp: Any) -> int:
    x = inp[0] if isinstance(inp, (tuple, list)) and inp else inp
    if not isinstance(x, torch.Tensor):
        return 0
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}
    g = next((v for k, v in gates.items() if type(mod).__name__.startswith(k)), 1)
    hidden = mod.hidden_size
    steps = x.numel() // max(1, x.shape[-1])  # batch x time
    layers = getattr(mod, "num_layers", 1)
    dirs = 2 if getattr(mod, "bidirectional", False) else 1
    return g * hidden * (x.shape[-1] + hidden) * steps * layers * dirs


def profile(model: nn.Module, example: tuple[Any, ...]) -> ComputeProfile:
    """Run ``model`` once on ``example`` with hooks and count MACs per layer family."""
    prof = ComputeProfile()
    hooks = []

    def hook(mod: nn.Module, inp: Any, out: Any) -> None:
        if isinstance(mod, nn.modules.conv._ConvNd) and isinstance(out, torch.Tensor):
            k = mod.weight[0].numel()  # in_channels / groups x kernel
            prof.macs["conv"] += out.numel() * k
        elif isinstance(mod, nn.Linear) and isinstance(out, torch.Tensor):
            prof.macs["linear"] += out.numel() * mod.in_features
            if out.dim() >= 3 and out.shape[-2] > 1:
                prof.token_linear = True
        elif isinstance(mod, RNN_TYPES):
            prof.macs["rnn"] += _rnn_macs(mod, inp)

    for mod in model.modules():
        if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear, *RNN_TYPES)):
            hooks.append(mod.register_forward_hook(hook))
        kind = (
            "conv"
            if isinstance(mod, nn.modules.conv._ConvNd)
            else "linear"
            if isinstance(mod, nn.Linear)
            else "rnn"
            if isinstance(mod, RNN_TYPES)
            else "other"
        )
        prof.params[kind] += sum(p.numel() for p in mod.parameters(recurse=False))
    try:
        with torch.inference_mode():
            model.eval()(*example)
    finally:
        for h in hooks:
            h.remove()
    return prof


def advise(model: nn.Module, example: tuple[Any, ...], mode: str) -> str | None:
    """A one-line warning when ``mode`` does not fit ``model`` (and what to use instead), else None."""
    try:
        prof = profile(model, example)
    except Exception:  # advice is best effort; quantization reports real problems itself
        return None
    if not prof.total:
        return None
    seq = prof.share("linear", "rnn")
    pct = lambda x: f"{100 * x:.0f}%"  # noqa: E731
    if mode == "static" and seq >= TOKEN_LINEAR and (prof.token_linear or prof.macs["rnn"]):
        return (
            f"{pct(seq)} of this model's compute is Linear/RNN layers over tokens or time steps, whose activation "
            "ranges vary per input: static calibration fits them poorly. Use --mode dynamic instead"
        )
    if mode == "dynamic" and prof.share("linear", "rnn") < DYNAMIC_MIN:
        return (
            f"dynamic mode quantizes only Linear/RNN layers, {pct(seq)} of this model's compute "
            f"({pct(prof.share('conv'))} is convolutions, which stay fp32): expect little speed-up. "
            "Use --mode static (calibrated int8 convolutions) instead"
        )
    return None


__all__ = ["ComputeProfile", "advise", "profile"]
