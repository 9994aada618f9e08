"""The manifest every ptsq artifact carries, built in one place for every mode and engine."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import ptsq
from ptsq import artifact
from ptsq.calibration import describe_inputs
from ptsq.config import QuantConfig


def build(
    *,
    model: nn.Module,
    example: tuple[Any, ...],
    config: QuantConfig,
    engine: str,
    backend: str,
    check: dict[str, Any],
    precision: list[dict[str, str]],
    details: dict[str, Any],
    notes: list[str],
    calibration: dict[str, Any],
    preprocess: dict[str, Any] | None = None,
    keywords: tuple[str, ...] | None = None,
    speed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What was quantized, how, and how well: versions, inputs, preprocessing, data, check, precision map."""
    inputs = describe_inputs(example, keywords)
    return {
        "ptsq_version": ptsq.__version__,
        "torch_version": torch.__version__,
        "engine": engine,
        "mode": config.mode,
        "backend": backend,
        "quantized_engine": torch.backends.quantized.engine,
        "input": {
            "shapes": [d["shape"] for d in inputs],
            "dtypes": [d["dtype"] for d in inputs],
            "names": [d["name"] for d in inputs],
            "keywords": list(keywords) if keywords else None,
            "batch_dim": 0,
        },
        "preprocess": preprocess,
        "calibration": calibration,
        "check": check,
        "speed": speed,
        "precision": precision,
        "source_weights_sha256": artifact.state_hash(model),
        "config": config.to_dict(),
        "details": details,
        "notes": notes,
    }


__all__ = ["build"]
