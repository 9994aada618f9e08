"""Quantization-aware training: fine-tune with fake quantization, then convert to the same int8 artifact as PTQ.

Use it when post-training quantization loses too much accuracy::

    import ptsq.qat

    qat_model = ptsq.qat.prepare(model, example_inputs=(x,), backend="auto")
    ptsq.qat.calibrate(qat_model, loader, max_batches=8)   # ranges as PTQ would set them, before training
    schedule = ptsq.qat.Schedule(total_steps=len(loader) * epochs)
    for step, (x, y) in enumerate(batches):           # your own loop, optimizer and loss
        schedule.step(qat_model, step)                  # freezes BN stats, then observers, on time
        loss = criterion(qat_model(x), y); loss.backward(); opt.step(); opt.zero_grad()
    qm = ptsq.qat.convert(qat_model, check_inputs=[(x,)])
    qm.save("model_int8.pt")

When things freeze (:class:`Schedule`, fractions of the total steps):

- **BatchNorm statistics** stop updating after ``freeze_bn_at`` (default 0.3). Fine-tuning starts from a
  trained model whose running statistics are already right; small fine-tuning batches only add noise to
  them, and the int8 model folds them into the conv weights. Frozen, BN uses its running statistics.
- **Observers** (the ranges fake quantization uses) stop updating after ``freeze_observers_at`` (default
  0.6). Early steps let ranges follow the weights as they move; the remaining steps train the weights
  against fixed quantization grids, which is what the int8 model will use.

Before the first step, :func:`calibrate` sets the ranges from a few batches in eval mode (BatchNorm on
its running statistics, as deployed); otherwise they start from one train-mode batch. On the
Fashion-MNIST ResNet with 4-bit weights (BENCHMARKS.md) the change that mattered was decaying the learning
rate to 0 (cosine) instead of keeping it constant, which left the weights hopping between rounding levels;
calibration first made little difference there but removes the dependence on the first batch. Both are
done by :func:`ptsq.modes.finetune.finetune`.

``freeze_bn`` and ``freeze_observers`` do each step by hand. Capture is torch.fx (``prepare_qat_fx``)
with the backend's default QAT qconfig mapping; user skip rules and kernels ptsq measured as broken
(PReLU in torch 2.14) stay fp32 through the FX engine's ``KeepFloat`` wrapper.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from ptsq.backends import activate, qconfig_name, resolve_backend
from ptsq.config import QuantConfig
from ptsq.engines.base import EngineResult
from ptsq.errors import ConfigError, QuantizationError, first_line
from ptsq.fidelity import compare
from ptsq.quantized import QuantizedModel

_STATE = "_ptsq_qat"  # attribute on the prepared GraphModule: backend, config, example inputs, fp32 hash


@dataclass
class Schedule:
    """When to freeze BatchNorm statistics and observers, as fractions of ``total_steps``."""

    total_steps: int
    freeze_bn_at: float = 0.3
    freeze_observers_at: float = 0.6

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ConfigError(f"total_steps={self.total_steps} must be at least 1", "count the optimizer steps")
        for name in ("freeze_bn_at", "freeze_observers_at"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name}={v} must be a fraction in [0, 1]", "e.g. 0.3")

    def step(self, model: nn.Module, step: int) -> list[str]:
        """Call before optimizer step ``step`` (0-based); returns what it froze at this step, if anything."""
        done = []
        if step == int(self.freeze_bn_at * self.total_steps):
            freeze_bn(model)
            done.append("bn")
        if step == max(1, int(self.freeze_observers_at * self.total_steps)):  # after observing once
            freeze_observers(model)
            done.append("observers")
        return done


def freeze_bn(model: nn.Module) -> None:
    """Stop updating BatchNorm running statistics (fused Conv+BN QAT modules and plain BN)."""
    from torch.ao.nn.intrinsic.qat import freeze_bn_stats

    model.apply(freeze_bn_stats)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def freeze_observers(model: nn.Module) -> None:
    """Stop updating quantization ranges; fake quantization keeps using the last ones."""
    from torch.ao.quantization import disable_observer

    model.apply(disable_observer)


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[Any], *, max_batches: int | None = None) -> int:
    """Set the fake-quantization ranges from ``batches`` before training, as PTQ calibration would.

    Without it the ranges start from whatever the first training batch shows, in train mode (BatchNorm
    on batch statistics), which is neither the model being deployed nor a representative sample. Runs in
    eval mode with observers on and no gradients; restores the model's train/eval mode. Each batch is a
    tensor, a tuple of model inputs, or ``(inputs, labels)`` (labels ignored). Returns the batches used.
    """
    from torch.ao.quantization import enable_observer

    was_training = model.training
    model.eval()
    model.apply(enable_observer)
    used = 0
    for batch in batches:
        if max_batches is not None and used >= max_batches:
            break
        if isinstance(batch, (tuple, list)) and len(batch) == 2 and not _is_tuple_input(model):
            batch = batch[0]  # (inputs, labels)
        args = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        model(*args)
        used += 1
    model.train(was_training)
    if used == 0:
        raise ConfigError("QAT calibration got no batches", "pass at least one batch of training inputs")
    return used


def _is_tuple_input(model: nn.Module) -> bool:
    """True when the prepared model takes more than one positional input (then a 2-tuple is its inputs)."""
    state = getattr(model, _STATE, None)
    return state is not None and len(state["example"]) == 2


def prepare(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    *,
    backend: str = "auto",
    config: QuantConfig | None = None,
    qconfig_mapping: Any = None,
) -> fx.GraphModule:
    """A copy of ``model`` with fake quantization inserted, in train mode, ready for fine-tuning.

    ``qconfig_mapping`` (advanced) replaces the backend's default QAT ``QConfigMapping``, e.g. to
    train for narrower ranges than int8.
    """
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    from ptsq.engines.fx import _capture, _quiet, keep_fp32
    from ptsq.engines.fx_fixed_inputs import free_fixed_inputs
    from ptsq.engines.keep_float import KeepFloat

    if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        raise ConfigError("QAT needs the original Python nn.Module", "pass the model object, not TorchScript")
    config = dataclasses.replace(config or QuantConfig(), mode="qat")
    chosen = resolve_backend(backend if backend != "auto" else config.backend)
    activate(chosen)
    example = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    work = copy.deepcopy(model).eval()
    notes: list[str] = []
    notes.extend(keep_fp32(work, config, chosen))
    notes.extend(_capture(work, config.strict))
    qmap = qconfig_mapping if qconfig_mapping is not None else get_default_qat_qconfig_mapping(qconfig_name(chosen))
    qmap = qmap.set_object_type(KeepFloat, None)
    custom = PrepareCustomConfig().set_non_traceable_module_classes([KeepFloat])
    ctx = _quiet()
    try:
        try:
            prepared = prepare_qat_fx(work.train(), qmap, example, prepare_custom_config=custom)
        except Exception as exc:
            raise QuantizationError(f"prepare_qat_fx failed: {first_line(exc)}", "report this model to ptsq") from exc
        free_fixed_inputs(prepared, qmap.global_qconfig.activation)  # see engines/fx_fixed_inputs.py
    finally:
        ctx.__exit__(None, None, None)
    from ptsq import artifact

    setattr(
        prepared,
        _STATE,
        {
            "backend": chosen,
            "config": config,
            "example": example,
            "notes": notes,
            "source_sha256": artifact.state_hash(model),
        },
    )
    return prepared


def convert(
    prepared: fx.GraphModule,
    *,
    check_inputs: Sequence[Any] | None = None,
    reference: nn.Module | None = None,
    source: dict[str, Any] | None = None,
) -> QuantizedModel:
    """The int8 model from a fine-tuned :func:`prepare` result, with the manifest PTQ artifacts carry.

    The self-check compares int8 with ``reference`` (default: the fake-quantized model itself, i.e.
    what training optimised) on ``check_inputs`` (default: the example inputs).
    """
    from torch.ao.quantization.quantize_fx import convert_fx

    from ptsq.engines.fx import _quiet, precision_map
    from ptsq.modes.dynamic import build_manifest

    state = getattr(prepared, _STATE, None)
    if state is None:
        raise ConfigError("convert() needs a model returned by ptsq.qat.prepare()", "call ptsq.qat.prepare first")
    backend, config, example = state["backend"], state["config"], state["example"]
    activate(backend)
    t0 = time.perf_counter()
    trained = copy.deepcopy(prepared).eval()
    checks = [a if isinstance(a, (tuple, list)) else (a,) for a in (check_inputs or [example])]
    ctx = _quiet()
    try:
        try:
            converted = convert_fx(copy.deepcopy(trained))
        except Exception as exc:
            raise QuantizationError(
                f"convert_fx failed: {first_line(exc)}", "keep the failing layer in fp32 with --skip"
            ) from exc
        rows = precision_map(converted, example, backend)
        ref = reference.eval() if reference is not None else trained
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fid = compare(ref, converted, [tuple(c) for c in checks])
    finally:
        ctx.__exit__(None, None, None)
    check = {
        **fid.to_dict(),
        "batches": len(checks),
        "held_out": check_inputs is not None,
        "against": "fp32 reference" if reference is not None else "fake-quantized (QAT) model",
        "passed": fid.sqnr_db >= config.warn_sqnr_db,
    }
    details = {
        "capture": "torch.fx symbolic trace (prepare_qat_fx)",
        "qconfig": f"default QAT ({qconfig_name(backend)})",
        "freeze": config.freeze,
    }
    result = EngineResult(module=converted, precision=rows, notes=list(state["notes"]), details=details)
    manifest = build_manifest(
        trained, example, "qat", backend, config, check, [r.to_dict() for r in rows], details, result.notes,
        calibration={"samples": 0, "source": "quantization-aware training (ranges from training batches)",
                     **(source or {})},
    )  # fmt: skip
    manifest["source_weights_sha256"] = state["source_sha256"]
    qm = QuantizedModel(result, manifest, example)
    qm.stats["seconds"] = round(time.perf_counter() - t0, 2)
    return qm


__all__ = ["Schedule", "calibrate", "convert", "freeze_bn", "freeze_observers", "prepare"]
