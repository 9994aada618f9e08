"""What FX quantizes and how: the backend's QConfigMapping with ptsq's choices, and the layers kept fp32."""

from __future__ import annotations

from typing import Any

from torch import nn

from ptsq.algorithms.keep_float import KeepFloat, wrap_modules
from ptsq.algorithms.observers import activation_observers
from ptsq.backends import qconfig_name
from ptsq.config import QuantConfig
from ptsq.engines.common import outermost, skip_targets
from ptsq.engines.fx.probes import broken_kernels, broken_layers

# subclasses too (static-"same"-padding convs); wrapped after the clean-up so their BatchNorm still folds
LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def keep_fp32(work: nn.Module, config: QuantConfig, backend: str) -> tuple[list[str], dict[str, str]]:
    """Wrap in KeepFloat what the skip rules name and what has a measured-wrong int8 kernel.

    Returns (notes, layers): conv/linear layers the rules name are returned unwrapped, to be wrapped
    after the graph clean-up (as the speed guard does), so their BatchNorm folds and padding splits
    as in the all-int8 model and their int8 neighbours are quantized exactly as without the rule.
    """
    notes: list[str] = []
    fallback = skip_targets(work, config)
    if config.fx.probe_kernels:
        for cls, score in broken_kernels(work, backend).items():
            reason = f"int8 {cls.__name__} kernel measured wrong ({score:.1f} dB on a probe), kept in fp32"
            notes.append(reason)
            for name, mod in work.named_modules():
                if type(mod) is cls:
                    fallback.setdefault(name, reason)
        for name, reason in broken_layers(work, backend).items():
            fallback.setdefault(name, reason)
    fallback = outermost(fallback)
    layers = {n: r for n, r in fallback.items() if isinstance(work.get_submodule(n), LAYERS)}
    wrap_modules(work, {n: r for n, r in fallback.items() if n not in layers})
    return notes, layers


def qconfig_mapping(config: QuantConfig, backend: str) -> tuple[Any, Any]:
    """The backend's QConfigMapping with ptsq's observer and weight choices, and the prepare config
    that keeps ``KeepFloat`` layers opaque and fp32 (shared by the whole-model and split paths)."""
    from torch.ao.quantization import get_default_qconfig, get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.observer import default_weight_observer
    from torch.ao.quantization.qconfig import QConfig

    qmap = get_default_qconfig_mapping(qconfig_name(backend))
    if not config.per_channel:
        base = get_default_qconfig(qconfig_name(backend))
        qmap = qmap.set_global(QConfig(activation=base.activation, weight=default_weight_observer))
    qmap = activation_observers(qmap, config.fx.observer).set_object_type(KeepFloat, None)
    return qmap, PrepareCustomConfig().set_non_traceable_module_classes([KeepFloat])


__all__ = ["LAYERS", "keep_fp32", "qconfig_mapping"]
