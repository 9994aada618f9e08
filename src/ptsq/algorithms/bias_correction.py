"""Bias correction for weight quantization (Nagel et al. 2019; Finkelstein et al. 2019), empirical.

Rounding weights to int8 shifts each output channel's mean: E[W_q x] - E[W x] = (W_q - W) E[x].
During calibration ptsq records E[x] per input channel of every conv/linear (on the fp32 values of
the observed model), then, before convert, subtracts (W_q - W) E[x] from the layer's bias, with W_q
computed by the very weight observer convert will use. Zero padding at the borders is ignored
(E[x] is the interior mean). Layers without a bias get one only if the correction is non-zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # the PT2E engine uses this module where torch.ao.quantization is gone
    from torch.ao.quantization.observer import ObserverBase

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


def _base_layer(mod: nn.Module) -> nn.Module | None:
    """The conv/linear holding the weights of ``mod`` (itself or the first child of a fused module)."""
    if type(mod) in _LAYERS:
        return mod
    if isinstance(mod, nn.Sequential) and len(mod) and type(mod[0]) in _LAYERS:
        return mod[0]  # ConvReLU2d, LinearReLU, ... (torch.ao.nn.intrinsic)
    return None


class ChannelMeans:
    """Running per-channel means of the tensors added under each key (E[x] for bias correction)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, key: str, x: torch.Tensor, channel: int) -> None:
        s, n = channel_sums(x, channel)
        self.sums[key] = self.sums.get(key, 0) + s
        self.counts[key] = self.counts.get(key, 0) + n

    def means(self) -> dict[str, torch.Tensor]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts[k]}


class InputMeans(ChannelMeans):
    """Forward pre-hooks that accumulate the per-channel input mean of every conv/linear of ``model``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.layers: dict[str, nn.Module] = {}
        self._hooks = []
        kept = [n for n, m in model.named_modules() if type(m).__name__ == "KeepFloat"]  # fp32 by choice
        for name, mod in model.named_modules():
            if any(name == k or name.startswith(k + ".") for k in kept):
                continue
            layer = _base_layer(mod)
            if layer is None or name in self.layers or any(layer is v for v in self.layers.values()):
                continue
            self.layers[name] = layer
            self._hooks.append(mod.register_forward_pre_hook(self._hook(name)))

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(_mod: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or x.is_quantized or x.dim() < 2:
                return
            self.add(name, x, x.dim() - 1 if isinstance(self.layers[name], nn.Linear) else 1)

        return hook

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


def channel_sums(x: torch.Tensor, channel: int) -> tuple[torch.Tensor, int]:
    """Per-channel sums of ``x`` (fp32) and how many values each sum adds up."""
    x = x.detach().float()
    s = x.transpose(0, channel).reshape(x.shape[channel], -1).sum(1)
    return s, x.numel() // s.numel()


def _quantized_weight(w: torch.Tensor, weight_observer: Callable[[], ObserverBase]) -> torch.Tensor:
    obs = weight_observer()
    obs(w)
    return fake_quantize(w, obs)


def fake_quantize(w: torch.Tensor, obs: Any) -> torch.Tensor:
    """``w`` rounded to the int8 grid of an observer that has seen it (torch.ao's or torchao's)."""
    scale, zp = obs.calculate_qparams()
    if scale.numel() > 1:
        axis = int(getattr(obs, "ch_axis", 0))
        return torch.fake_quantize_per_channel_affine(
            w, scale.float(), zp.int(), axis, int(obs.quant_min), int(obs.quant_max)
        )
    return torch.fake_quantize_per_tensor_affine(w, float(scale), int(zp), int(obs.quant_min), int(obs.quant_max))


def bias_shift(dw: torch.Tensor, mu: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """(W_q - W) E[x] per output channel: dW * E[x] summed over input channels (group-aware) and taps."""
    dwg = dw.reshape(groups, dw.shape[0] // groups, dw.shape[1], -1).sum(-1)  # (G, out/G, ipg)
    return torch.einsum("goi,gi->go", dwg, mu.reshape(groups, -1).to(dw.dtype)).reshape(-1)


def correct_biases(means: InputMeans, weight_observer: Callable[[], ObserverBase], min_shift: float = 0.0) -> int:
    """Subtract (W_q - W) E[x] from each recorded layer's bias; returns how many layers changed."""
    count = 0
    with torch.no_grad():
        for name, mu in means.means().items():
            layer = means.layers[name]
            w = layer.weight.detach()
            dq = _quantized_weight(w, weight_observer) - w
            groups = getattr(layer, "groups", 1)
            if dq.shape[1] * groups != mu.numel():
                continue
            shift = bias_shift(dq, mu, groups)
            if float(shift.abs().max()) <= min_shift:
                continue
            if layer.bias is None:
                layer.bias = nn.Parameter(-shift.to(w.dtype))
            else:
                layer.bias.sub_(shift.to(layer.bias.dtype))
            count += 1
    return count
