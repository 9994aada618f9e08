"""ptsq: post-training static quantization of PyTorch models to int8, measured against fp32.

Importing ptsq is cheap: the heavy modules load on first use of a name.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "quantize": "ptsq.api",
    "quantize_dynamic": "ptsq.api",
    "load": "ptsq.quantized",
    "QuantizedModel": "ptsq.quantized",
    "ArtifactModel": "ptsq.quantized",
    "QuantConfig": "ptsq.config",
    "SkipRule": "ptsq.config",
    **{
        name: "ptsq.config"
        for name in (
            "FxOptions",
            "OnnxOptions",
            "OpenVinoOptions",
            "Pt2eOptions",
            "AutoOptions",
            "SpeedOptions",
            "CalibrationOptions",
            "DynamicOptions",
            "QatOptions",
        )
    },
    "Preprocess": "ptsq.data.preprocess",
    "preset": "ptsq.data.preprocess",
    "CalibrationImages": "ptsq.data.images",
    "CalibrationTensors": "ptsq.data.tensors",
    "model_inputs": "ptsq.data.inputs",
    "load_model": "ptsq.models",
    "benchmark": "ptsq.bench",
    "evaluate": "ptsq.evaluation",
    "supported_backends": "ptsq.backends",
    "quantize_with_budget": "ptsq.analysis.budget",
    "analyze": "ptsq.analysis.sensitivity",
}
_ERRORS = [
    "PtsqError", "ConfigError", "BackendError", "ModelLoadError", "UnsafeFileError", "WeightsMismatchError",
    "DataError", "ImageDecodeError", "InputShapeError", "TraceError", "QuantizationError", "ArtifactError",
    "OutputPathError", "Interrupted", "ClusterError", "SlowerThanFp32Error", "TorchAoUnavailable",
]  # fmt: skip
_EXPORTS.update({name: "ptsq.errors" for name in [*_ERRORS, "QuantizationWarning", "SpeedWarning"]})

__all__ = [*sorted(_EXPORTS), "__version__"]

_legacy = importlib.import_module("ptsq.legacy")
_legacy.install_if_requested()  # PTSQ_NO_TORCH_AO=1: torch.ao.quantization is gone, as it will be


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ptsq' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
