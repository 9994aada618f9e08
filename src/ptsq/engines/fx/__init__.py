"""The FX engine (torch.ao.quantization, FX graph mode) and the FX-only machinery behind it.

Modules: ``engine`` (capture -> clean-up -> prepare -> calibrate -> convert -> TorchScript), ``capture``
(untraceable submodules kept fp32), ``split`` (models whose top-level forward is untraceable), ``qconfig``
(what is quantized and how), ``probes`` (int8 kernels measured before they are trusted), ``speed`` (the
speed guard), ``fixed_inputs`` (sigmoid/tanh after fp32 layers), ``precision`` (the precision map),
``dynamic`` (dynamic int8 module swap) and ``qat`` (quantization-aware training).

Only this package imports its modules; the rest of ptsq uses the names exported here.
"""

from ptsq.engines.fx.dynamic import SUPPORTED as DYNAMIC_TYPES
from ptsq.engines.fx.dynamic import supported_layers, swap_dynamic
from ptsq.engines.fx.engine import FxEngine
from ptsq.engines.fx.qat import convert_qat, freeze_bn, prepare_qat, set_observers

__all__ = [
    "DYNAMIC_TYPES",
    "FxEngine",
    "convert_qat",
    "freeze_bn",
    "prepare_qat",
    "set_observers",
    "supported_layers",
    "swap_dynamic",
]
