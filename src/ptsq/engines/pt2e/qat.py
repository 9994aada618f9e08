"""Quantization-aware training on the PT2E path: torch.export (train mode) -> torchao ``prepare_qat_pt2e``.

The training graph is the exported aten graph with fake quantization inserted (conv+BN kept as torchao's
QAT fusion, BatchNorm on batch statistics). :mod:`ptsq.qat` drives it with the same API and schedule as
the FX path; the three things that differ are here: freezing BatchNorm (rewrite every batch_norm call to
use and keep its running statistics), switching observers (torchao's ``enable/disable_observer``) and
convert (``convert_pt2e`` + ptsq's passes + the .pt2 artifact).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import fx, nn

from ptsq.config import QuantConfig
from ptsq.engines.base import LayerPrecision
from ptsq.engines.common import skip_targets
from ptsq.engines.pt2e.capture import batch2, export, export_explanation
from ptsq.engines.pt2e.passes import drop_unused_tensors, sink_dequantize
from ptsq.engines.pt2e.precision import precision_map
from ptsq.engines.pt2e.quantizer import make_quantizer
from ptsq.errors import QuantizationError, TraceError, first_line

_aten = torch.ops.aten
_BATCH_NORMS = {_aten.batch_norm.default: 5, _aten._native_batch_norm_legit.default: 5}  # op -> index of `training`


def prepare(model: nn.Module, example: tuple[Any, ...], config: QuantConfig) -> tuple[fx.GraphModule, list[str]]:
    """A fake-quantized training copy of ``model`` (train mode), and notes."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    work = copy.deepcopy(model).train()
    skipped = skip_targets(work, config)
    notes = [f"'{n}' {r}" for n, r in skipped.items()]
    errors = []
    for strict in (True, False):
        try:
            ep = export(work, batch2(example), strict)
            break
        except Exception as exc:  # exporter errors come in many types
            errors.append(export_explanation(exc))
    else:
        raise TraceError(
            f"torch.export cannot capture the model for QAT: {errors[0]}",
            "make forward export-friendly, or use the fx engine where torch.ao.quantization is available",
        )
    quantizer, qnotes = make_quantizer(config, skipped, qat=True)
    try:
        prepared = prepare_qat_pt2e(ep.module(), quantizer)
    except Exception as exc:
        raise QuantizationError(f"prepare_qat_pt2e failed: {first_line(exc)}", "report this model to ptsq") from exc
    prepared = allow_exported_model_train_eval(prepared)  # .train()/.eval() switch dropout and BatchNorm
    prepared.train()
    return prepared, [*notes, *qnotes]


def freeze_bn(model: fx.GraphModule) -> int:
    """Make every batch_norm use and keep its running statistics; returns how many changed."""
    changed = 0
    for node in model.graph.nodes:
        index = _BATCH_NORMS.get(node.target) if node.op == "call_function" else None
        if index is not None and len(node.args) > index and node.args[index] is True:
            node.args = (*node.args[:index], False, *node.args[index + 1 :])
            changed += 1
    if changed:
        model.recompile()
    return changed


def set_observers(model: nn.Module, enabled: bool) -> None:
    from torchao.quantization.pt2e import disable_observer, enable_observer

    model.apply(enable_observer if enabled else disable_observer)


def convert(trained: fx.GraphModule) -> tuple[fx.GraphModule, list[LayerPrecision], list[str]]:
    """The int8 program of a trained :func:`prepare` result (which is left as it was)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    model = copy.deepcopy(trained)
    model.eval()  # BatchNorm on running statistics, dropout off
    try:
        converted = convert_pt2e(model)
    except Exception as exc:
        raise QuantizationError(
            f"convert_pt2e failed: {first_line(exc)}", "keep the failing layer in fp32 with --skip"
        ) from exc
    notes = []
    if n := sink_dequantize(converted):
        notes.append(f"clean-up: {n} data-movement ops run on int8 values")
    drop_unused_tensors(converted)
    rows = precision_map(converted, {})
    return allow_exported_model_train_eval(converted), rows, notes
