"""Give sigmoid/hardsigmoid/tanh/softmax a real input observer when their producer stays fp32.

torch.ao's FX prepare gives each fixed-qparams op one QConfig whose activation observer is the op's
*output* range ([0, 1) for sigmoid). When the producer is quantized the op reuses the producer's
output observer and all is well. When the producer is kept in fp32 (skip rules, speed guard, kernel
probes, untraceable parts, the accuracy budget), prepare puts that fixed observer on the op's
*input*: the input is quantized to [0, 1), so every negative pre-activation becomes sigmoid(0).
Measured on torchvision efficientnet_b0 with only its squeeze-excitation expand convs kept fp32:
output SQNR against fp32 fell from 6 dB to -19 dB. Keeping a layer fp32 must never cost fidelity.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import fx, nn


@functools.cache
def _fixed_ops() -> tuple[set[type], set[object], set[str]]:
    from torch.ao.quantization.qconfig_mapping import _FIXED_QPARAMS_OP_TO_OBSERVER

    ops = list(_FIXED_QPARAMS_OP_TO_OBSERVER)
    return (
        {o for o in ops if isinstance(o, type)},
        {o for o in ops if callable(o) and not isinstance(o, type)},
        {o for o in ops if isinstance(o, str)},
    )


def _is_fixed_op(gm: fx.GraphModule, node: object) -> bool:
    if not isinstance(node, fx.Node):
        return False
    types, funcs, methods = _fixed_ops()
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))) in types
    if node.op == "call_function":
        return node.target in funcs
    return node.op == "call_method" and node.target in methods


def free_fixed_inputs(prepared: fx.GraphModule, make_observer: Callable[[], nn.Module]) -> int:
    """Replace fixed-range observers that watch a non-fixed-qparams producer; returns how many."""
    from torch.ao.quantization.fake_quantize import FixedQParamsFakeQuantize
    from torch.ao.quantization.observer import FixedQParamsObserver

    count = 0
    for node in prepared.graph.nodes:
        if node.op != "call_module" or not node.args:
            continue
        obs = prepared.get_submodule(str(node.target))
        if not isinstance(obs, (FixedQParamsObserver, FixedQParamsFakeQuantize)):
            continue
        if _is_fixed_op(prepared, node.args[0]):
            continue  # the op's own output observer: its fixed range is exact
        prepared.register_module(str(node.target), make_observer())
        count += 1
    return count
