"""Int8 layers of a converted PT2E program put back to fp32 one at a time (``analyze``, the accuracy budget).

The FX engine swaps an int8 module for its float original. A PT2E program has no modules, only aten
calls between quantize/dequantize pairs, so a *layer* here is a module name from export's
``nn_module_stack`` — what a ``--skip name:`` rule names — that holds at least one int8 conv, linear
or matmul. Putting it in fp32 edits a copy of the graph: its ops take the calibrated fp32 weights (BN
folded, biases as they were before bias correction), and an activation quantized only to feed them
arrives in fp32 instead. That is what the skip rule gives after re-quantization, estimated without
calibrating again. The copies run on the reference kernels (compiling one per layer would take
minutes), so sensitivities are measured on the reference program; the compiled one differs from it
by rounding only.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import fx, nn

from ptsq.engines.base import LayerPrecision
from ptsq.engines.pt2e.precision import DEQUANTIZE, FUSABLE, QUANTIZE, WEIGHTED, module_path, op_name
from ptsq.engines.pt2e.quantizer import MOVEMENT, SPLITS


def _unobserved(arg: Any) -> Any:
    """The value an observer in the calibrated graph looks at (observers are ``activation_post_process_N``)."""
    while isinstance(arg, fx.Node) and arg.op == "call_module" and "activation_post_process" in str(arg.target):
        arg = arg.args[0]
    return arg


def _inside(module: str, names: Iterable[str]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


class _Tap(nn.Module):
    """Keeps the first value it sees under ``key`` (a probe inserted after a graph node)."""

    def __init__(self, store: dict[str, torch.Tensor], key: str) -> None:
        super().__init__()
        self.store, self.key = store, key

    def forward(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor) and self.key not in self.store:
            self.store[self.key] = x.detach().float().clone()  # in-place ops may follow
        return x


def _tapped(gm: fx.GraphModule, taps: dict[str, str], store: dict[str, torch.Tensor]) -> fx.GraphModule:
    """A copy of ``gm`` (sharing its tensors) that records node ``n``'s value as ``taps[n]`` in ``store``."""
    out = fx.GraphModule(gm, copy.deepcopy(gm.graph))
    for i, node in enumerate(list(out.graph.nodes)):
        if node.name in taps:
            out.add_submodule(f"_ptsq_tap_{i}", _Tap(store, taps[node.name]))
            with out.graph.inserting_after(node):
                out.graph.call_module(f"_ptsq_tap_{i}", (node,))
    out.recompile()
    return out


class Pt2eFloatLayers:
    """The int8 layers of one converted program, and copies of it with some of them in fp32."""

    def __init__(
        self, converted: fx.GraphModule, observed: fx.GraphModule, rows: Sequence[tuple[fx.Node, LayerPrecision]]
    ) -> None:
        self.converted, self.observed = converted, observed
        self._observed_nodes = {n.name: n for n in observed.graph.nodes}
        # (node name, module name) of every compute op: an fp32 one may still take an int8-rounded input
        self._ops: list[tuple[str, str]] = []
        self._names: list[str] = []
        self._ends: dict[str, str] = {}  # layer -> the node whose value is its output (after fused post-ops)
        for node, row in rows:
            module, _ = module_path(node)
            self._ops.append((node.name, module))
            if row.precision != "int8":
                continue
            if module and op_name(node) in WEIGHTED and node.name in self._observed_nodes:
                if module not in self._names:
                    self._names.append(module)
                self._ends[module] = _fused_end(node).name

    def names(self) -> list[str]:
        """Layers that can run in fp32 here, in graph order."""
        return list(self._names)

    def with_float(self, names: Iterable[str]) -> nn.Module:
        """A copy of the program where the named layers (and anything inside them) run in fp32."""
        names = list(names)
        if not names:
            return self.converted
        gm = fx.GraphModule(self.converted, copy.deepcopy(self.converted.graph))
        nodes = {n.name: n for n in gm.graph.nodes}
        constants = 0
        for node_name, module in self._ops:
            node, ref = nodes.get(node_name), self._observed_nodes.get(node_name)
            if node is None or ref is None or not _inside(module, names):
                continue
            args = list(node.args)
            for i, arg in enumerate(node.args):
                source = _unobserved(ref.args[i]) if i < len(ref.args) else None
                if isinstance(arg, fx.Node) and isinstance(source, fx.Node) and source.op == "get_attr":
                    # a weight or a bias: the calibrated fp32 tensor
                    attr = f"_ptsq_fp32_{constants}"
                    constants += 1
                    gm.register_buffer(attr, _attribute(self.observed, str(source.target)))
                    with gm.graph.inserting_before(node):
                        args[i] = gm.graph.get_attr(attr)
                elif op_name(arg) in DEQUANTIZE and (value := _float_value(gm.graph, arg.args[0], node)) is not None:
                    args[i] = value  # the fp32 value that was quantized to feed this op
            node.args = tuple(args)
        gm.recompile()
        return gm

    def speed_keys(self, args: tuple[Any, ...]) -> dict[str, tuple[Any, ...]]:
        """Each layer's speed-verdict key (kind, channels, kernel, ..., its input shape on ``args``)."""
        first: dict[str, str] = {}  # layer -> its first conv/linear call
        for node_name, module in self._ops:
            node = self._observed_nodes.get(node_name)
            if module in self._names and module not in first and node is not None and op_name(node) in WEIGHTED:
                first[module] = node_name
        shapes: dict[str, torch.Tensor] = {}
        taps = {}
        for module, node_name in first.items():
            src = self._observed_nodes[node_name].args[0]
            if isinstance(src, fx.Node):
                taps[src.name] = module
        with torch.inference_mode():
            _tapped(self.observed, taps, shapes)(*args)
        keys = {}
        for module, node_name in first.items():
            node = self._observed_nodes[node_name]
            weight = _unobserved(node.args[1]) if len(node.args) > 1 else None
            if module not in shapes or not (isinstance(weight, fx.Node) and weight.op == "get_attr"):
                continue
            key = _speed_key(node, _attribute(self.observed, str(weight.target)), tuple(shapes[module].shape))
            if key is not None:
                keys[module] = key
        return keys

    def layer_outputs(
        self, names: Sequence[str], args: tuple[Any, ...]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(fp32, int8) output of each named layer on ``args``: the calibrated fp32 graph and the program."""
        taps = {self._ends[n]: n for n in names if n in self._ends}
        ref: dict[str, torch.Tensor] = {}
        got: dict[str, torch.Tensor] = {}
        with torch.inference_mode():
            _tapped(self.observed, taps, ref)(*args)
            _tapped(self.converted, taps, got)(*args)
        return ref, got


_CONV = {"conv1d": "Conv1d", "conv2d": "Conv2d"}


def _speed_key(node: fx.Node, weight: torch.Tensor, shape: tuple[int, ...]) -> tuple[Any, ...] | None:
    """The per-layer speed verdict's key (:mod:`ptsq.engines.pt2e.speed`) for a conv/linear call."""
    op = op_name(node)
    if op == "linear" and len(shape) == 2:
        return ("Linear", int(weight.shape[1]), int(weight.shape[0]), shape)
    if op not in _CONV:
        return None
    dims = weight.dim() - 2
    rest = list(node.args[3:]) + [None] * 4
    stride, padding, dilation, groups = (rest[i] if rest[i] is not None else d for i, d in enumerate((1, 0, 1, 1)))

    def tup(v: Any) -> tuple[int, ...]:
        return tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else (int(v),) * dims

    kernel = tuple(int(k) for k in weight.shape[2:])
    cin, cout = int(weight.shape[1]) * int(groups), int(weight.shape[0])
    return (_CONV[op], cin, cout, kernel, tup(stride), tup(padding), tup(dilation), int(groups), shape)


def _float_value(graph: fx.Graph, value: Any, before: fx.Node) -> fx.Node | None:
    """The fp32 value behind int8 ``value``: the input of its quantize, moved as the int8 values were.

    Data movement runs on int8 values (:func:`ptsq.engines.pt2e.passes.sink_dequantize`), so an
    activation may reach its dequantize through views and splits; they are repeated on the fp32 value.
    """
    if not isinstance(value, fx.Node):
        return None
    if op_name(value) in QUANTIZE:
        return value.args[0] if isinstance(value.args[0], fx.Node) else None
    if value.op != "call_function" or not (value.target in MOVEMENT | SPLITS or value.target is operator.getitem):
        return None
    inner = _float_value(graph, value.args[0], before)
    if inner is None:
        return None
    with graph.inserting_before(before):
        return graph.call_function(value.target, (inner, *value.args[1:]), dict(value.kwargs))


def _fused_end(node: fx.Node) -> fx.Node:
    """The last of the single-user post-ops (ReLU, add, ...) fused into ``node``: the layer's output."""
    while len(node.users) == 1 and op_name(next(iter(node.users))) in FUSABLE:
        node = next(iter(node.users))
    return node


def _attribute(gm: nn.Module, target: str) -> torch.Tensor:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value.detach().clone()
