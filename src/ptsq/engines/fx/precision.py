"""The precision map of an FX-converted model: each compute node, int8 or fp32, and why."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from ptsq.algorithms.keep_float import KeepFloat
from ptsq.engines.base import LayerPrecision

# Ops that move or reshape data without computing: not listed in the precision map.
PLUMBING = {
    "quantize_per_tensor", "quantize_per_channel", "dequantize", "getattr", "getitem", "size", "dim",
    "flatten", "reshape", "view", "permute", "transpose", "contiguous", "squeeze", "unsqueeze", "chunk",
    "split", "expand", "to", "float", "type", "t", "numel", "detach",
}  # fmt: skip


def _op_label(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        inner = mod.inner if isinstance(mod, KeepFloat) else mod
        return type(inner).__name__
    target = node.target
    return getattr(target, "__name__", None) or str(target).split(".")[-1]


class _Recorder(fx.Interpreter):
    """Run the converted graph once and record whether each node's output is quantized."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.quantized: dict[str, bool] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if isinstance(out, torch.Tensor) and (out.is_quantized or out.is_floating_point()):  # not indices, masks
            self.quantized[n.name] = out.is_quantized
        return out


def precision_map(gm: fx.GraphModule, example_args: tuple[Any, ...], backend: str) -> list[LayerPrecision]:
    rec = _Recorder(gm)
    with torch.no_grad():
        rec.run(*example_args)
    rows: list[LayerPrecision] = []
    for node in gm.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method") or node.name not in rec.quantized:
            continue
        label = _op_label(node, gm)
        if node.op != "call_module" and label in PLUMBING:
            continue
        name = str(node.target) if node.op == "call_module" else node.name
        if rec.quantized[node.name]:
            rows.append(LayerPrecision(name, label, "int8"))
            continue
        reason = f"no int8 kernel for {label} in the {backend} backend"
        if node.op == "call_module":
            mod = gm.get_submodule(str(node.target))
            if isinstance(mod, KeepFloat):
                reason = mod.reason
        rows.append(LayerPrecision(name, label, "fp32", reason))
    return rows


__all__ = ["PLUMBING", "precision_map"]
