"""The per-layer precision map of a converted PT2E graph: every compute op, int8 or fp32 and why.

Every call that is not data movement, a quantize/dequantize pair or a constant is a row, so an op the
quantizer has no recipe for (a ConvTranspose1d, a LayerNorm, a softmax) shows up as fp32 with its reason
instead of being left out. Activations fused into the int8 conv/linear before them (ReLU, ReLU6,
hardswish, a residual add) get no row of their own, as in the FX engine's map.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx

from ptsq.engines.base import LayerPrecision
from ptsq.engines.common import skip_reason
from ptsq.engines.pt2e.quantizer import MOVEMENT, SPLITS

# ops with a weight operand: int8 when both the activation and the weight arrive dequantized from int8
WEIGHTED = {
    "conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "linear", "matmul", "mm", "bmm", "addmm", "baddbmm", "einsum",
}  # fmt: skip
# post-ops inductor fuses into the int8 conv/linear before them
FUSABLE = {"relu", "relu_", "hardtanh", "hardtanh_", "hardswish", "hardswish_", "silu", "silu_", "add", "add_"}
DEQUANTIZE = {"dequantize_per_tensor", "dequantize_per_channel", "dequantize_affine"}
QUANTIZE = {"quantize_per_tensor", "quantize_per_channel", "quantize_affine"}
# calls that compute nothing worth a row: shapes, copies, type changes, constants, dropout in eval
PLUMBING = {
    "sym_size", "sym_numel", "sym_stride", "_assert_tensor_metadata", "_assert_scalar", "detach", "detach_",
    "alias", "lift_fresh_copy", "_to_copy", "to", "type_as", "dropout", "feature_dropout", "zeros", "ones",
    "full", "empty", "arange", "scalar_tensor", "zeros_like", "ones_like", "full_like", "empty_like",
    "size", "numel", "dim", "item", "_local_scalar_dense", "copy_", "copy",
}  # fmt: skip
_MOVEMENT_NAMES = {str(op).split(".")[-2] for op in MOVEMENT | SPLITS}


def op_name(node: Any) -> str:
    """``conv2d`` for ``aten.conv2d.default``; '' for anything that is not a function call."""
    if not isinstance(node, fx.Node) or node.op != "call_function":
        return ""
    if node.target is operator.getitem:
        return "getitem"
    return str(getattr(node.target, "__name__", node.target)).split(".")[0]


def module_path(node: fx.Node) -> tuple[str, str]:
    """(qualified module name, module type) that produced ``node``, from export's nn_module_stack."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, cls = list(stack.values())[-1]
    name = str(path).replace("L['self'].", "").replace("L__self___", "")
    cls_name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1]
    return name, cls_name


def _size_arithmetic(node: fx.Node) -> bool:
    """Python arithmetic on symbolic sizes (a dynamic batch or image size), not tensor compute."""
    if getattr(node.target, "__module__", "") in ("_operator", "operator", "math"):
        return True
    return isinstance(node.meta.get("val"), (int, float, bool, torch.SymInt, torch.SymFloat, torch.SymBool))


def is_compute(node: fx.Node) -> bool:
    if node.op == "call_function" and _size_arithmetic(node):
        return False
    name = op_name(node)
    if not name or name == "getitem" or name in PLUMBING or name in _MOVEMENT_NAMES:
        return False
    return name not in DEQUANTIZE and name not in QUANTIZE


def _inputs(node: fx.Node) -> list[fx.Node]:
    if op_name(node) == "cat" and node.args and isinstance(node.args[0], (list, tuple)):
        return [a for a in node.args[0] if isinstance(a, fx.Node)]
    return [a for a in node.args if isinstance(a, fx.Node)]


def _ends_quantized(node: fx.Node) -> bool:
    """Whether ``node``'s value is quantized, directly or after a chain of single-user post-ops (add -> relu)."""
    while True:
        if any(op_name(u) in QUANTIZE for u in node.users):
            return True
        users = list(node.users)
        if len(users) != 1 or op_name(users[0]) not in FUSABLE:
            return False
        node = users[0]


def _reason(op: str) -> str:
    if op.startswith("conv_transpose"):
        return f"no int8 kernel for {op} in PT2E's x86 lowering (oneDNN int8 convolution has no transposed path)"
    return f"no int8 kernel for {op} in PT2E's x86 lowering (the x86 inductor quantizer leaves it fp32)"


def precision_map(gm: fx.GraphModule, skipped: dict[str, str]) -> list[LayerPrecision]:
    """Which compute ops of the converted graph run in int8 (input dequantized from int8) or fp32."""
    return [row for _node, row in precision_rows(gm, skipped)]


def precision_rows(gm: fx.GraphModule, skipped: dict[str, str]) -> list[tuple[fx.Node, LayerPrecision]]:
    """:func:`precision_map` with the graph node behind each row."""
    rows: list[tuple[fx.Node, LayerPrecision]] = []
    seen: dict[str, int] = {}
    int8_nodes: set[str] = set()
    for node in gm.graph.nodes:
        if not is_compute(node):
            continue
        op = op_name(node)
        inputs = _inputs(node)
        in_q = bool(inputs) and op_name(inputs[0]) in DEQUANTIZE
        out_q = any(op_name(u) in QUANTIZE for u in node.users)
        if op in FUSABLE and inputs and inputs[0].name in int8_nodes and _ends_quantized(node):
            int8_nodes.add(node.name)  # a post-op fused into the int8 conv/linear before it: no row
            continue
        if op in WEIGHTED:  # activation and weight both dequantized from int8
            int8 = in_q and len(inputs) > 1 and op_name(inputs[1]) in DEQUANTIZE
        else:
            int8 = in_q and out_q
        if int8:
            int8_nodes.add(node.name)
        mod, cls = module_path(node)
        name = mod or node.name
        if name in seen:  # one module called twice, or several ops in one module
            seen[name] += 1
            name = f"{name}#{seen[name]}"
        else:
            seen[name] = 0
        label = cls if mod else op
        if int8:
            rows.append((node, LayerPrecision(name, label, "int8")))
        else:
            rows.append((node, LayerPrecision(name, label, "fp32", skip_reason(mod, skipped) or _reason(op))))
    return rows
