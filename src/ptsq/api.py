"""The public entry points: quantize() and load(). Thin orchestration over engines and checks."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

import ptsq
from ptsq import artifact
from ptsq.backends import activate, resolve_backend
from ptsq.calibration import CalibrationStream, adapt_keywords, describe_inputs, first_sample
from ptsq.config import QuantConfig
from ptsq.data.preprocess import Preprocess
from ptsq.engines import get_engine
from ptsq.errors import ConfigError, InputShapeError, first_line
from ptsq.fidelity import Fidelity, compare
from ptsq.progress import task
from ptsq.quantized import QuantizedModel, load
from ptsq.selfcheck import culprits


class QuantizationWarning(UserWarning):
    """The int8 model's self-check found it far from fp32."""


def _describe_args(args: tuple[Any, ...]) -> str:
    return ", ".join(
        f"{tuple(a.shape)} {str(a.dtype).replace('torch.', '')}" if isinstance(a, torch.Tensor) else type(a).__name__
        for a in args
    )


def _check_model_accepts(model: nn.Module, args: tuple[Any, ...]) -> None:
    try:
        with torch.inference_mode():
            model(*args)
    except Exception as exc:
        msg = first_line(exc)
        raise InputShapeError(
            f"the model rejects inputs of shape {_describe_args(args)}: {msg}",
            "give inputs the model accepts (--input-size, or the channel count via --preset/--channels)",
        ) from None


def quantize(
    model: nn.Module,
    calibration: Iterable[Any],
    *,
    example_inputs: tuple[Any, ...] | None = None,
    backend: str = "auto",
    config: QuantConfig | None = None,
    progress: bool = True,
    transform: Callable[[Any], Any] | None = None,
    preprocess: Preprocess | None = None,
    source: dict[str, Any] | None = None,
) -> QuantizedModel:
    """Post-training static quantization of ``model`` to int8, checked against fp32.

    ``calibration`` is any iterable of input batches (tensors, tuples of tensors, or a DataLoader's
    ``(inputs, labels)``); ``transform`` maps a batch to model inputs. The last few batches are held
    back and used to compare int8 with fp32; the result is in ``summary()["check"]``.
    The input model is never modified.
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError(
            "a TorchScript module cannot be re-captured for quantization", "pass the original Python nn.Module"
        )
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model is a {type(model).__name__}, not a torch.nn.Module", "pass an nn.Module")
    config = config or QuantConfig()
    if config.engine == "auto":  # every engine, fidelity-checked and timed; the fastest faithful one wins
        from ptsq.engines.auto import quantize_auto

        return quantize_auto(
            model, calibration, example_inputs=example_inputs, backend=backend, config=config,
            progress=progress, transform=transform, preprocess=preprocess, source=source,
        )  # fmt: skip
    chosen = resolve_backend(backend if backend != "auto" else config.backend)
    activate(chosen)
    engine = get_engine(config.engine)
    torch.manual_seed(config.seed)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    try:
        total = getattr(calibration, "expected_images", None)
        if total is None and hasattr(calibration, "dataset"):
            total = len(calibration.dataset)  # type: ignore[attr-defined]
        with task("calibrating", total, progress) as update:
            stream = CalibrationStream(
                calibration, transform=transform, hold_back=config.check_batches, progress=update
            )
            runner = adapt_keywords(model, stream)  # dict batches naming forward parameters -> keywords
            names = getattr(runner, "names", None)
            full = stream.first
            if isinstance(example_inputs, dict) and names:
                example_inputs = tuple(example_inputs[n] for n in names)
            example = tuple(example_inputs) if example_inputs is not None else first_sample(full)
            _check_model_accepts(runner, first_sample(full))
            result = engine.quantize(runner, lambda fn: stream.run(fn), example, config, chosen)
        check_batches = stream.held or [full]
        try:
            fid = compare(runner, result.module, check_batches)
        except ValueError as exc:  # variable-size outputs (e.g. detections): nothing to compare element-wise
            fid = Fidelity(samples=0, sqnr_db=math.nan, cosine=math.nan)
            result.notes.append(f"self-check skipped: {exc} (variable-size outputs, such as detections)")
    finally:
        model.train(was_training)
    elapsed = time.perf_counter() - t0

    rows = [r.to_dict() for r in result.precision]
    check: dict[str, Any] = {
        **fid.to_dict(),
        "batches": len(check_batches),
        "held_out": not (getattr(stream, "in_sample_check", False) or not stream.held),
    }
    # agreement on a handful of samples is noise; SQNR is meaningful on any count
    poor = fid.sqnr_db < config.warn_sqnr_db or (
        fid.top1_agreement is not None and fid.samples >= 32 and fid.top1_agreement < config.warn_agreement
    )
    check["passed"] = not poor if fid.samples else None  # None: outputs could not be compared
    if poor and "observed" in result.debug:
        names = [r["name"] for r in rows if r["precision"] == "int8"]
        try:
            check["culprits"] = [
                {"name": n, "sqnr_db": round(s, 2)}
                for n, s in culprits(result.debug["observed"], result.module, names, check_batches[0])
            ]
        except Exception:  # culprit search is best effort; the warning itself stands
            check["culprits"] = []

    calib_info = {
        "batches": stream.calibrated_batches,
        "samples": stream.calibrated_samples,
        "held_back_batches": len(stream.held),
        "seed": config.seed,
        **(source or {}),
    }
    manifest: dict[str, Any] = {
        "ptsq_version": ptsq.__version__,
        "torch_version": torch.__version__,
        "engine": engine.name,
        "mode": "static",
        "backend": chosen,
        "quantized_engine": torch.backends.quantized.engine,
        "input": {
            "shapes": [d["shape"] for d in describe_inputs(example, names)],
            "dtypes": [d["dtype"] for d in describe_inputs(example, names)],
            "names": [d["name"] for d in describe_inputs(example, names)],
            "keywords": list(names) if names else None,
            "batch_dim": 0,
        },
        "preprocess": preprocess.to_dict() if preprocess is not None else None,
        "calibration": calib_info,
        "check": check,
        "precision": rows,
        "source_weights_sha256": artifact.state_hash(model),
        "config": config.to_dict(),
        "details": result.details,
        "notes": result.notes,
    }
    qm = QuantizedModel(result, manifest, example)
    qm.stats["seconds"] = round(elapsed, 2)
    if poor:
        names = ", ".join(c["name"] for c in check.get("culprits", [])) or "unknown"
        agree = f", top-1 agreement {fid.top1_agreement:.2f}" if fid.top1_agreement is not None else ""
        warnings.warn(
            f"int8 output is far from fp32 (SQNR {fid.sqnr_db:.1f} dB{agree}); likely culprits: {names}. "
            "Keep them in fp32 with skip rules, or check the calibration data.",
            QuantizationWarning,
            stacklevel=2,
        )
    return qm


__all__ = ["QuantizationWarning", "load", "quantize"]
