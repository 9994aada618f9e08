"""Calibration and evaluation data: preprocessing specs, folders of images, tensor files and text files.

Names load on first use, so that importing ``ptsq.data.preprocess`` (the CLI's option parsing) does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IMAGE_EXTENSIONS": "ptsq.data.images",
    "CalibrationImages": "ptsq.data.images",
    "ImageFolder": "ptsq.data.images",
    "decode_image": "ptsq.data.images",
    "find_images": "ptsq.data.images",
    "PRESETS": "ptsq.data.preprocess",
    "Preprocess": "ptsq.data.preprocess",
    "parse_floats": "ptsq.data.preprocess",
    "parse_size": "ptsq.data.preprocess",
    "preset": "ptsq.data.preprocess",
    "TensorInputs": "ptsq.data.tensor_inputs",
    "inputs_from_file": "ptsq.data.tensor_inputs",
    "TENSOR_EXTENSIONS": "ptsq.data.tensors",
    "CalibrationTensors": "ptsq.data.tensors",
    "is_tensor_file": "ptsq.data.tensors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ptsq.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
