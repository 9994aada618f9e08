"""Dynamic int8 on the PT2E path: torchao's dynamic x86 recipe (int8 weights, activations quantized per call).

torch.export -> X86InductorQuantizer with ``is_dynamic=True`` (Linear layers; LSTM/GRU have no PT2E
dynamic kernel and stay fp32) -> convert_pt2e -> inductor, which lowers each Linear to
``onednn::qlinear_pointwise`` fed by an in-graph ``choose_qparams`` + quantize. Whether that is faster
than fp32 depends on the CPU: here (AVX-512 VNNI) three MiniLM-sized Linears ran 3.0x faster than fp32
compiled (1.43 vs 4.23 ms, thread CPU time); on an AVX2 CPU without VNNI torchao's dynamic int8 Linear
was measured 25x slower than fp32. So every Linear is timed both ways on its real input shape first
(:func:`ptsq.engines.pt2e.speed.dynamic_verdict`); a slower one stays fp32.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from ptsq.config import QuantConfig
from ptsq.engines.base import LayerPrecision
from ptsq.engines.pt2e.capture import capture
from ptsq.engines.pt2e.passes import drop_unused_tensors
from ptsq.engines.pt2e.quantizer import import_torchao
from ptsq.engines.pt2e.runtime import CompiledProgram
from ptsq.engines.pt2e.speed import slow_dynamic_linears
from ptsq.errors import QuantizationError, first_line


def quantize_pt2e_dynamic(
    model: nn.Module,
    example: tuple[Any, ...],
    config: QuantConfig,
    layers: dict[str, nn.Module],
    fallback: dict[str, str],
) -> tuple[nn.Module, list[LayerPrecision], dict[str, Any], list[str]]:
    """(int8 module, precision rows, details, notes); ``fallback`` (name -> reason) gains the layers kept fp32."""
    import_torchao()
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    notes: list[str] = []
    work = copy.deepcopy(model).eval()
    for name, mod in layers.items():
        if not isinstance(mod, nn.Linear):
            fallback.setdefault(name, f"no dynamic int8 kernel for {type(mod).__name__} in PT2E's x86 lowering")
    if config.speed_guard > 0:
        slow = slow_dynamic_linears(work, example, config.speed_guard)
        for name, why in slow.items():
            fallback.setdefault(name, why)
        if slow:
            notes.append(f"speed guard: {len(slow)} Linear layer(s) kept in fp32, dynamic int8 is slower here")
    if all(n in fallback for n in layers):  # still a valid (fp32) program; the map says why for each layer
        notes.append("no layer is int8: each is kept fp32 (see the precision map); --speed-guard 0 quantizes anyway")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep, mode = capture(work, example)
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config(is_dynamic=True))
        for name in fallback:
            quantizer.set_module_name_qconfig(name, None)
        try:
            prepared = prepare_pt2e(ep.module(), quantizer)
            with torch.no_grad():
                prepared(*example)
            converted = convert_pt2e(prepared)
        except Exception as exc:
            raise QuantizationError(
                f"PT2E dynamic quantization failed: {first_line(exc)}", "try --engine onnx"
            ) from exc
        drop_unused_tensors(converted)
    converted = allow_exported_model_train_eval(converted)
    rows = [
        LayerPrecision(n, type(m).__name__, "fp32" if n in fallback else "int8", fallback.get(n, ""))
        for n, m in layers.items()
    ]
    details = {
        "capture": f"torch.export ({mode})",
        "quantizer": "torchao X86InductorQuantizer (dynamic)",
        "weights": "per-channel int8 (Linear)",
        "activations": "dynamic per-tensor uint8, quantized per call",
        "runtime": "inductor (freezing)",
    }
    module: nn.Module = CompiledProgram(converted).eval() if config.pt2e.compile else converted
    return module, rows, details, notes
