"""Put single layers of a converted int8 model back in fp32, keeping the int8 interfaces around them.

Shared by the sensitivity analysis (what would keeping this layer fp32 gain?), the accuracy budget and the
whole-model speed check (this int8 kernel is slower than fp32 in context: run it in fp32). The fp32 twin
of an int8 layer is the float module at the same name in the calibrated fp32 graph (fused modules share
names with the int8 model), with its observers dropped.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


class FloatLayer(nn.Module):
    """Run ``inner`` (a float conv/linear, possibly fused with its activation) between dequantize and quantize."""

    def __init__(self, inner: nn.Module, scale: float, zero_point: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = inner
        self.scale = float(scale)
        self.zero_point = int(zero_point)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x.dequantize() if x.is_quantized else x)
        return torch.quantize_per_tensor(y, self.scale, self.zero_point, self.dtype)


def swappable_layers(converted: nn.Module, observed: nn.Module) -> list[str]:
    """Names of int8 modules (with an output scale) whose float version the observed model holds."""
    names = []
    for name, mod in converted.named_modules():
        if not name or not hasattr(mod, "scale") or not hasattr(mod, "zero_point") or not hasattr(mod, "weight"):
            continue
        try:
            ref = observed.get_submodule(name)
        except AttributeError:
            continue
        if any(p.is_floating_point() for p in ref.parameters(recurse=True)):
            names.append(name)
    return names


def float_twin(observed: nn.Module, name: str) -> nn.Module:
    """A copy of the float module ``name`` of the calibrated fp32 graph, without its observers."""
    mod = copy.deepcopy(observed.get_submodule(name))
    for sub in list(mod.modules()):  # drop observers hanging off the float module
        for child_name, child in list(sub.named_children()):
            if "activation_post_process" in child_name or type(child).__name__.endswith("Observer"):
                setattr(sub, child_name, nn.Identity())
    return mod.eval()


def set_float_layer(model: nn.Module, observed: nn.Module, name: str) -> None:
    """Replace the int8 layer ``name`` of ``model`` (in place) by its fp32 twin between dequantize and quantize."""
    q = model.get_submodule(name)
    parent, _, leaf = name.rpartition(".")
    holder = model.get_submodule(parent) if parent else model
    setattr(holder, leaf, FloatLayer(float_twin(observed, name), float(q.scale), int(q.zero_point), torch.quint8))


def with_float_layers(converted: nn.Module, observed: nn.Module, names: Iterable[str]) -> nn.Module:
    """A copy of ``converted`` where the named int8 layers run in fp32 (same quantized interfaces)."""
    model = copy.deepcopy(converted)
    for name in names:
        set_float_layer(model, observed, name)
    return model


__all__ = ["FloatLayer", "float_twin", "set_float_layer", "swappable_layers", "with_float_layers"]
