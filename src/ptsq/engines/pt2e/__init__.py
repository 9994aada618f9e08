"""PT2E static quantization: torch.export -> torchao prepare_pt2e/convert_pt2e -> inductor.

Capture with ``torch.export`` (:mod:`.capture`; submodules it cannot capture become fp32 TorchScript islands,
:mod:`.islands`), annotate with torchao's ``X86InductorQuantizer`` plus
ptsq's int8 data movement (:mod:`.quantizer`), calibrate, correct conv/linear biases for int8 weight
rounding (:mod:`.bias`), convert, clean the aten graph up (:mod:`.passes`), and run it compiled by
inductor with freezing (:mod:`.runtime`). The artifact is a ``torch.export`` program with the manifest
inside (:mod:`.artifact`). Only this package imports its modules' internals.
"""

from ptsq.engines.pt2e.artifact import MANIFEST_NAME
from ptsq.engines.pt2e.capture import capture, export_explanation
from ptsq.engines.pt2e.dynamic import quantize_pt2e_dynamic
from ptsq.engines.pt2e.engine import Pt2eEngine
from ptsq.engines.pt2e.precision import precision_map
from ptsq.engines.pt2e.qat import convert as convert_qat
from ptsq.engines.pt2e.qat import freeze_bn, set_observers
from ptsq.engines.pt2e.qat import prepare as prepare_qat
from ptsq.engines.pt2e.quantizer import reduce_range
from ptsq.engines.pt2e.runtime import NO_COMPILE_ENV, CompiledProgram, cache_dir

__all__ = [
    "MANIFEST_NAME",
    "NO_COMPILE_ENV",
    "CompiledProgram",
    "Pt2eEngine",
    "cache_dir",
    "capture",
    "convert_qat",
    "export_explanation",
    "freeze_bn",
    "precision_map",
    "prepare_qat",
    "quantize_pt2e_dynamic",
    "reduce_range",
    "set_observers",
]
