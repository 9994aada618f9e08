"""Static post-training quantization: calibrate activation ranges on real batches, convert, check against fp32."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ptsq import manifest
from ptsq.backends import activate, resolve_backend
from ptsq.calibration import CalibrationStream, adapt_keywords, example_from_batch
from ptsq.config import QuantConfig
from ptsq.data.preprocess import Preprocess
from ptsq.engines import get_engine
from ptsq.modes.check import self_check, warn_if_poor
from ptsq.modes.speed import check_speed, check_threads, warn_if_slower
from ptsq.progress import task
from ptsq.quantized import QuantizedModel


def _expected(calibration: Iterable[Any]) -> int | None:
    total = getattr(calibration, "expected_images", None)
    if total is None and hasattr(calibration, "dataset"):
        total = len(calibration.dataset)  # type: ignore[attr-defined]
    return total


def quantize_static(
    model: nn.Module,
    calibration: Iterable[Any],
    config: QuantConfig,
    *,
    example_inputs: tuple[Any, ...] | None = None,
    progress: bool = True,
    transform: Callable[[Any], Any] | None = None,
    preprocess: Preprocess | None = None,
    source: dict[str, Any] | None = None,
    labelled: bool | None = None,
) -> QuantizedModel:
    """Calibrate on ``calibration`` (all but the last ``config.check_samples`` samples), convert with
    ``config.engine``, check the deployed int8 model's speed against fp32 at ``config.speed.threads``
    (:mod:`ptsq.modes.speed`), then compare int8 with fp32 on the held-back samples. ``model`` is not modified.

    Batches are taken as given (``labelled``: see :func:`ptsq.calibration.is_labelled`); the example for
    tracing is one sample of the first batch when the model accepts one, else the whole first batch."""
    check_threads(config.speed.threads)
    backend = resolve_backend(config.backend)
    activate(backend)
    engine = get_engine(config.engine)
    torch.manual_seed(config.seed)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    try:
        with task("calibrating", _expected(calibration), progress) as update:
            stream = CalibrationStream(
                calibration,
                transform=transform,
                hold_samples=config.check_samples,
                progress=update,
                model=model,
                labelled=labelled,
                expected=_expected(calibration),
            )
            runner = adapt_keywords(model, stream)  # dict batches naming forward parameters -> keywords
            names = getattr(runner, "names", None)
            if isinstance(example_inputs, dict) and names:
                example_inputs = tuple(example_inputs[n] for n in names)
            example, example_note = example_from_batch(runner, stream.first)  # also: the model accepts the batch
            real = example  # real data (one sample when the model takes one): what the speed check times
            if example_inputs is not None:
                example, example_note = tuple(example_inputs), None
            result = engine.quantize(runner, lambda fn: stream.run(fn), example, config, backend)
            if example_note:
                result.notes.insert(0, example_note)
        held = stream.held or [stream.first]
        result.debug["check_batches"] = held  # saving proves the artifact against the int8 model on these
        speed = check_speed(runner, engine, result, real, config, progress=progress)
        check = self_check(runner, result, held, config, in_sample=stream.in_sample_check)
    finally:
        model.train(was_training)
    calibration_info = {
        "batches": stream.calibrated_batches,
        "samples": stream.calibrated_samples,
        "held_back_batches": len(stream.held),
        "held_back_samples": stream.held_samples,
        "seed": config.seed,
        **(source or {}),
    }
    built = manifest.build(
        model=model, example=example, config=config, engine=engine.name, backend=backend, check=check,
        precision=[r.to_dict() for r in result.precision], details=result.details, notes=result.notes,
        calibration=calibration_info, preprocess=preprocess.to_dict() if preprocess is not None else None,
        keywords=names, speed=speed,
    )  # fmt: skip
    qm = QuantizedModel(result, built, example)
    qm.held_back = held
    qm.stats["seconds"] = round(time.perf_counter() - t0, 2)
    warn_if_poor(check)
    warn_if_slower(speed)
    return qm


__all__ = ["quantize_static"]
