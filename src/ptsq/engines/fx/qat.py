"""Quantization-aware training on torch.ao FX: fake-quantized copies to fine-tune, and their int8 conversion."""

from __future__ import annotations

import copy
from typing import Any

from torch import fx, nn

from ptsq.algorithms.keep_float import KeepFloat, wrap_modules
from ptsq.backends import qconfig_name
from ptsq.config import QuantConfig
from ptsq.engines.base import LayerPrecision
from ptsq.engines.common import quiet
from ptsq.engines.fx.capture import make_traceable
from ptsq.engines.fx.fixed_inputs import free_fixed_inputs
from ptsq.engines.fx.precision import precision_map
from ptsq.engines.fx.qconfig import keep_fp32
from ptsq.errors import QuantizationError, first_line


def prepare_qat(
    model: nn.Module, example: tuple[Any, ...], config: QuantConfig, backend: str, qconfig_mapping: Any = None
) -> tuple[fx.GraphModule, list[str]]:
    """A fake-quantized copy of ``model`` in train mode (skip rules and broken kernels kept fp32); notes."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    work = copy.deepcopy(model).eval()
    notes, layers = keep_fp32(work, config, backend)
    wrap_modules(work, layers)  # no graph clean-up here: BN folding is what QAT's fused modules do
    notes.extend(make_traceable(work, config.strict))
    qmap = qconfig_mapping if qconfig_mapping is not None else get_default_qat_qconfig_mapping(qconfig_name(backend))
    qmap = qmap.set_object_type(KeepFloat, None)
    custom = PrepareCustomConfig().set_non_traceable_module_classes([KeepFloat])
    with quiet():
        try:
            prepared = prepare_qat_fx(work.train(), qmap, example, prepare_custom_config=custom)
        except Exception as exc:
            raise QuantizationError(f"prepare_qat_fx failed: {first_line(exc)}", "report this model to ptsq") from exc
        free_fixed_inputs(prepared, qmap.global_qconfig.activation)  # see engines/fx/fixed_inputs.py
    return prepared, notes


def convert_qat(
    trained: fx.GraphModule, example: tuple[Any, ...], backend: str
) -> tuple[fx.GraphModule, list[LayerPrecision]]:
    """The int8 model of a fine-tuned fake-quantized model (left untouched), with its precision map."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with quiet():
        try:
            converted = convert_fx(copy.deepcopy(trained))
        except Exception as exc:
            raise QuantizationError(
                f"convert_fx failed: {first_line(exc)}", "keep the failing layer in fp32 with --skip"
            ) from exc
        return converted, precision_map(converted, example, backend)


def freeze_bn(model: nn.Module) -> None:
    """Stop updating BatchNorm running statistics (fused Conv+BN QAT modules and plain BN)."""
    from torch.ao.nn.intrinsic.qat import freeze_bn_stats

    model.apply(freeze_bn_stats)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def set_observers(model: nn.Module, on: bool) -> None:
    """Start or stop updating quantization ranges; fake quantization keeps using the last ones."""
    from torch.ao.quantization import disable_observer, enable_observer

    model.apply(enable_observer if on else disable_observer)


__all__ = ["convert_qat", "freeze_bn", "prepare_qat", "set_observers"]
