"""Turn what a command line names (a folder, a tensor file, nothing) into the data each mode takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ptsq.config import QuantConfig
from ptsq.data.images import CalibrationImages
from ptsq.data.labelled import LabelledFolder
from ptsq.data.preprocess import Preprocess
from ptsq.data.source import CalibrationSource
from ptsq.data.tensors import CalibrationTensors, is_tensor_file
from ptsq.errors import ConfigError

DYNAMIC_CHECK_SAMPLES = 64  # dynamic mode only checks against fp32: a few batches are enough


def calibration_source(
    path: str, pre: Preprocess, config: QuantConfig, *, max_images: int, num: int | None = None
) -> tuple[CalibrationSource, Preprocess | None]:
    """Batches from a folder of images or a tensor file, and the preprocessing that describes them
    (None for a tensor file whose samples do not have the preprocessing's shape)."""
    cal = config.calibration
    if is_tensor_file(path):  # already-preprocessed inputs; record the preprocessing only if it fits them
        source = CalibrationTensors(path, num=num or cal.num, batch_size=cal.batch_size, seed=config.seed)
        return source, pre if source.sample_shape == tuple(pre.input_shape()[1:]) else None
    images = CalibrationImages(
        path, pre, num=num or cal.num, batch_size=cal.batch_size, seed=config.seed, max_images=max_images
    )
    return images, pre


def example_for(model: nn.Module, pre: Preprocess) -> tuple[Any, ...]:
    """The model's own ``example_inputs()`` if it has one, else one image-shaped input from ``pre``."""
    fn = getattr(model, "example_inputs", None)
    if callable(fn):
        ex = fn()
        return tuple(ex) if isinstance(ex, (tuple, list)) else (ex,)
    channels = 1 if pre.channels == "gray" else 3
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, channels, *pre.size, generator=g),)


@dataclass
class ModeData:
    """What a mode gets from the command line's data options."""

    data: Any  # calibration source, check batches, labelled dataset, or None
    example: tuple[Any, ...] | None = None  # example inputs when the data cannot give them
    source: dict[str, Any] = field(default_factory=dict)  # recorded in the manifest's calibration section
    preprocess: Preprocess | None = None  # what describes the inputs (None: tensors of another shape)
    calibration: CalibrationSource | None = None  # for counts and skipped-file warnings


def mode_data(model: nn.Module, path: str | None, pre: Preprocess, config: QuantConfig, *, max_images: int) -> ModeData:
    """The data ``config.mode`` takes, from a folder of images, a tensor file or nothing."""
    if config.mode == "qat":
        data = LabelledFolder(path, pre, max_images=max_images) if path else None
        return ModeData(data, None, {"train_source": str(path)} if path else {}, pre)
    if config.mode == "static":
        if not path:
            raise ConfigError(
                "--mode static needs calibration data (--calib)", "pass --calib DIR, or use --mode dynamic"
            )
        source, described = calibration_source(path, pre, config, max_images=max_images)
        return ModeData(source, None, {}, described, source)
    example = example_for(model, pre)
    if path:
        source, described = calibration_source(path, pre, config, max_images=max_images, num=DYNAMIC_CHECK_SAMPLES)
        return ModeData([(b,) for b in source], example, {"check_source": str(path)}, described, source)
    if hasattr(model, "example_inputs"):  # the model's example and three random variants of it
        g = torch.Generator().manual_seed(config.seed)
        variants = [
            tuple(torch.randn(a.shape, generator=g) if a.is_floating_point() else a for a in example) for _ in range(3)
        ]
        return ModeData([example, *variants], example, {}, None)
    return ModeData(None, example, {}, pre)


__all__ = ["ModeData", "calibration_source", "example_for", "mode_data"]
