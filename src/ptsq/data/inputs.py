"""Turn what a command line names (a folder, a tensor file, a text file, nothing) into the data each mode takes.

Every mode takes its inputs from ``--calib``: static mode calibrates on them, dynamic mode checks int8
against fp32 on them, QAT takes its example inputs from them. A folder is images; a file is model inputs
matched to ``forward`` (:mod:`ptsq.data.tensor_inputs`), or sentences with ``calibration.tokenizer``
(:mod:`ptsq.data.text`). Batches are taken as given; the modes choose the example from the first one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptsq.config import QuantConfig
from ptsq.data.images import CalibrationImages
from ptsq.data.labelled import LabelledFolder
from ptsq.data.preprocess import Preprocess
from ptsq.data.source import CalibrationSource
from ptsq.data.tensor_inputs import TEXT_EXTENSIONS, inputs_from_file
from ptsq.data.tensors import TENSOR_EXTENSIONS
from ptsq.errors import ConfigError

DYNAMIC_CHECK_SAMPLES = 64  # dynamic mode only checks against fp32: a few batches are enough


def calibration_source(
    path: str,
    pre: Preprocess | None,
    config: QuantConfig,
    *,
    max_images: int,
    num: int | None = None,
    model: nn.Module | None = None,
) -> tuple[CalibrationSource, Preprocess | None]:
    """Batches from a folder of images, a tensor file or a text file (for ``model``), and the preprocessing
    that describes them (None for file inputs whose samples do not have the preprocessing's shape)."""
    cal = config.calibration
    p = Path(path).expanduser()
    if p.is_file() or cal.tokenizer or p.suffix.lower() in (*TENSOR_EXTENSIONS, *TEXT_EXTENSIONS):
        source = inputs_from_file(
            p, model, tokenizer=cal.tokenizer or None, max_length=cal.max_length, num=num or cal.num,
            batch_size=cal.batch_size, seed=config.seed,
        )  # fmt: skip
        shape = getattr(source, "sample_shape", None)  # already model inputs: the preprocessing only if it fits
        return source, pre if pre is not None and shape == tuple(pre.input_shape()[1:]) else None
    if pre is None:  # never a silent default (ImageNet's): the caller says how pixels become inputs
        raise ConfigError(
            f"decoding the images in '{path}' needs their preprocessing",
            "pass --preset and --input-size (API: preprocess=)",
        )
    images = CalibrationImages(
        path, pre, num=num or cal.num, batch_size=cal.batch_size, seed=config.seed, max_images=max_images
    )
    return images, pre


def example_for(model: nn.Module, pre: Preprocess | None) -> tuple[Any, ...]:
    """The model's own ``example_inputs()`` if it has one, else one image-shaped input from ``pre``."""
    fn = getattr(model, "example_inputs", None)
    if callable(fn):
        ex = fn()
        return tuple(ex) if isinstance(ex, (tuple, list)) else (ex,)
    if pre is None:
        raise ConfigError("the model has no example_inputs() and no input size is known", "pass --input-size")
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


def mode_data(
    model: nn.Module, path: str | None, pre: Preprocess | None, config: QuantConfig, *, max_images: int,
    calib: str | None = None,
) -> ModeData:  # fmt: skip
    """The data ``config.mode`` takes, from a folder of images, a tensor or text file, or nothing.

    QAT trains on ``path`` (labelled images); ``calib`` then gives it example inputs."""
    if config.mode == "qat":
        data = LabelledFolder(path, pre, max_images=max_images) if path else None
        source: dict[str, Any] = {"train_source": str(path)} if path else {}
        example = None
        if calib:
            example = _qat_example(model, calib, pre, config, max_images)
            source["example_source"] = str(calib)
        return ModeData(data, example, source, pre)
    if config.mode == "static":
        if not path:
            raise ConfigError(
                "--mode static needs calibration data (--calib)", "pass --calib DIR, or use --mode dynamic"
            )
        cal, described = calibration_source(path, pre, config, max_images=max_images, model=model)
        return ModeData(cal, None, {}, described, cal)
    if path:  # batches as given (tuples, dicts of named inputs); dynamic mode picks the example from them
        cal, described = calibration_source(
            path, pre, config, max_images=max_images, num=DYNAMIC_CHECK_SAMPLES, model=model
        )
        batches = list(cal)
        facts = cal.summary()
        source = {"check_source": str(path), "check_samples": facts["used"]}
        source.update({k: facts[k] for k in ("tokenizer", "max_length") if k in facts})
        return ModeData(batches, None, source, described, cal)
    example = example_for(model, pre)
    if hasattr(model, "example_inputs"):  # the model's example and three random variants of it
        g = torch.Generator().manual_seed(config.seed)
        variants = [
            tuple(torch.randn(a.shape, generator=g) if a.is_floating_point() else a for a in example) for _ in range(3)
        ]
        return ModeData([example, *variants], example, {}, None)
    return ModeData(None, example, {}, None)  # random inputs of the given size: no preprocessing describes them


def model_inputs(
    source: str | Path,
    model: nn.Module | None = None,
    preprocess: Preprocess | None = None,
    *,
    tokenizer: str | Path | None = None,
    max_length: int = 128,
    num: int = 300,
    batch_size: int = 32,
    seed: int = 0,
    max_images: int = 1_000_000,
) -> CalibrationSource:
    """What ``--calib SOURCE`` reads, from Python: batches for ``model`` from a folder of images (with
    ``preprocess``, required for images: never guessed), a tensor file, or a text file with ``tokenizer``."""
    from ptsq.config import CalibrationOptions

    options = CalibrationOptions(
        num=num, batch_size=batch_size, tokenizer=str(tokenizer or ""), max_length=max_length
    )  # fmt: skip
    config = QuantConfig(seed=seed, calibration=options)
    return calibration_source(str(source), preprocess, config, max_images=max_images, model=model)[0]


def _qat_example(model: nn.Module, calib: str, pre: Preprocess | None, config: QuantConfig, max_images: int) -> tuple:
    """QAT's example inputs from ``--calib``: the first batch, positional, one sample where the model takes one."""
    from ptsq.calibration import as_positional, example_from_batch

    cal, _ = calibration_source(calib, pre, config, max_images=max_images, num=DYNAMIC_CHECK_SAMPLES, model=model)
    runner, args, _ = as_positional(model, [next(iter(cal))])
    if runner is not model:
        raise ConfigError(
            f"--mode qat takes positional inputs, and --calib '{calib}' names them in another order",
            "save the inputs as a tuple in forward's order",
        )
    return example_from_batch(model, args[0])[0]


__all__ = ["ModeData", "calibration_source", "example_for", "mode_data", "model_inputs"]
