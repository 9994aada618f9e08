"""The PT2E quantizer: torchao's X86InductorQuantizer plus what it leaves out.

torchao annotates conv/linear (with their fused post-ops), matmul, mul and a few int8-in-int8-out ops
(max/avg pool, cat, flatten). ptsq adds:

- **Conv1d** (with a following ReLU fused): torchao annotates only conv2d, though inductor lowers
  int8 conv1d to oneDNN too; a Conv1d model quantized nothing.
- **Data movement in int8.** view/reshape/transpose/permute/contiguous/chunk/split/squeeze/... after a
  quantized op share its quantization parameters, and a cat fed by them is quantized too. torchao leaves
  them fp32, so ShuffleNet's channel shuffle ran as dequantize -> shuffle -> quantize with a different
  scale per branch, and every block after the first concatenated in fp32 (a third of its run time).
  :func:`ptsq.engines.pt2e.passes.sink_dequantize` then moves the uint8 values themselves.
- **Skip rules and fp32 regions** by module name (torchao's ``set_module_name_qconfig(name, None)``).

The extension uses two of torchao's annotation helpers; if a torchao release renames them, ptsq
quantizes with torchao's recipe alone and says so in the notes.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
from typing import Any

import torch
from torch import fx

from ptsq.config import QuantConfig
from ptsq.engines.common import reduce_range as reduce_range_choice

ANNOTATION_KEY = "quantization_annotation"

_aten = torch.ops.aten
# ops that only move or reshape values: int8 in, int8 out, same scale
MOVEMENT = {
    _aten.view.default, _aten.reshape.default, _aten.transpose.int, _aten.permute.default,
    _aten.contiguous.default, _aten.clone.default, _aten.squeeze.dim, _aten.squeeze.dims, _aten.squeeze.default,
    _aten.unsqueeze.default, _aten.flatten.using_ints, _aten.slice.Tensor, _aten.narrow.default,
    _aten.pixel_shuffle.default, _aten.pixel_unshuffle.default, _aten.channel_shuffle.default,
    _aten.expand.default, _aten.select.int, _aten.unflatten.int,
}  # fmt: skip
# ops returning several tensors (taken apart by getitem), each a slice of the input
SPLITS = {_aten.chunk.default, _aten.split.Tensor, _aten.split_with_sizes.default, _aten.unbind.int}
_RELU = {_aten.relu.default, _aten.relu_.default}


def import_torchao() -> None:
    """Import torchao's PT2E modules without the deprecation chatter they log at import time."""
    logging.disable(logging.WARNING)
    try:
        import torchao.quantization.pt2e.quantize_pt2e
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401
    finally:
        logging.disable(logging.NOTSET)


def reduce_range(config: QuantConfig) -> bool:
    """7-bit activations unless the CPU has VNNI (``pt2e_reduce_range``: auto/on/off).

    Without VNNI oneDNN multiplies u8 x s8 pairs into saturating int16; 7-bit activations keep the sum
    in range. The reference (eager) kernels do not saturate, so only the compiled program shows it.
    """
    return reduce_range_choice(config.pt2e.reduce_range)


def _annotation(node: fx.Node) -> Any:
    return node.meta.get(ANNOTATION_KEY)


def _quantized_output(node: Any) -> bool:
    """Whether ``node``'s output is annotated int8 (the output of a quantized pattern)."""
    ann = _annotation(node) if isinstance(node, fx.Node) else None
    return bool(ann is not None and getattr(ann, "_is_output_of_quantized_pattern", False))


def make_quantizer(config: QuantConfig, fp32_modules: dict[str, str], qat: bool = False) -> tuple[Any, list[str]]:
    """(quantizer, notes): torchao's x86 recipe (fake quantization for QAT), ptsq's extensions, modules kept fp32."""
    import_torchao()
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    notes: list[str] = []
    qconfig = x86.get_default_x86_inductor_quantization_config(is_qat=qat, reduce_range=reduce_range(config))
    if config.fx.observer != "histogram" and not qat:  # ptsq's range setting (docs/accuracy.md) on torchao's observers
        from ptsq.algorithms.observers import activation_factory

        act = qconfig.input_activation
        ctr = activation_factory(config.fx.observer, act.observer_or_fake_quant_ctr, "torchao")
        act = dataclasses.replace(act, observer_or_fake_quant_ctr=ctr)
        qconfig = dataclasses.replace(qconfig, input_activation=act, output_activation=act)
    helpers = (
        "_X86InductorQuantizationAnnotation", "_annotate_propagation_quantizable_pattern",
        "_annotate_output_for_int8_in_int8_out_pattern", "_annotate_conv_node_helper",
    )  # fmt: skip
    extend = config.pt2e.extend and all(hasattr(x86, h) or hasattr(x86.X86InductorQuantizer, h) for h in helpers)
    if config.pt2e.extend and not extend:
        notes.append("this torchao lacks the annotation helpers ptsq extends: conv1d and data movement stay fp32")
    q = (PtsqQuantizer if extend else x86.X86InductorQuantizer)()
    q.set_global(qconfig)
    for name in fp32_modules:
        q.set_module_name_qconfig(name, None)
    return q, notes


def _skipped(node: fx.Node, names: set[str]) -> bool:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [str(p).replace("L['self'].", "").replace("L__self___", "") for p, _ in stack.values()]
    return any(p == n or p.startswith(n + ".") for p in paths for n in names)


def _make_quantizer_class() -> type:
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec, get_input_act_qspec
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    annotation_cls = x86._X86InductorQuantizationAnnotation
    int8_ops = x86.int8_in_int8_out_ops

    class _PtsqX86(x86.X86InductorQuantizer):
        """X86InductorQuantizer that also quantizes conv1d and keeps data movement (and its cats) in int8."""

        def annotate(self, model: fx.GraphModule) -> fx.GraphModule:
            super().annotate(model)
            config = self.global_config
            if config is None:
                return model
            skipped = {n for n, c in self.module_name_qconfig.items() if c is None}
            for node in model.graph.nodes:  # topological: a chain is annotated front to back
                if node.op != "call_function" or _annotation(node) is not None or _skipped(node, skipped):
                    continue
                if node.target is _aten.conv1d.default and isinstance(node.args[1], fx.Node):
                    users = list(node.users)
                    fuse = len(users) == 1 and users[0].target in _RELU and _annotation(users[0]) is None
                    self._annotate_conv_node_helper(node, not fuse, config)
                    if fuse:
                        users[0].meta[ANNOTATION_KEY] = annotation_cls(
                            _annotated=True, _is_output_of_quantized_pattern=True
                        )
                elif node.target in MOVEMENT | SPLITS and _quantized_output(node.args[0]):
                    src = node.args[0]
                    shared = SharedQuantizationSpec((src, node))
                    node.meta[ANNOTATION_KEY] = annotation_cls(
                        input_qspec_map={src: get_input_act_qspec(config)},
                        output_qspec=None if node.target in SPLITS else shared,
                        _annotated=True,
                        _is_output_of_quantized_pattern=node.target not in SPLITS,
                    )
                    for user in node.users if node.target in SPLITS else ():
                        if user.target is operator.getitem and _annotation(user) is None:
                            user.meta[ANNOTATION_KEY] = annotation_cls(
                                output_qspec=shared, _annotated=True, _is_output_of_quantized_pattern=True
                            )
                elif node.target in int8_ops:  # a cat (or pool) fed by int8 data movement
                    self._annotate_propagation_quantizable_pattern(node, config, _always)
                    if _annotation(node) is not None:
                        self._annotate_output_for_int8_in_int8_out_pattern(node)
            return model

    return _PtsqX86


def _always(_nodes: list[fx.Node]) -> bool:
    return True


class _Lazy:
    """The subclass is built on first use: torchao is imported only when the PT2E engine runs."""

    cls: type | None = None

    def __call__(self) -> Any:
        if _Lazy.cls is None:
            _Lazy.cls = _make_quantizer_class()
        return _Lazy.cls()


PtsqQuantizer = _Lazy()
