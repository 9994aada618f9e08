"""Quantization-aware training: fine-tune with fake quantization, then convert to the same int8 artifact as PTQ.

Use it when post-training quantization loses too much accuracy. With labelled batches (a DataLoader of
``(inputs, labels)``), ``ptsq.quantize(model, loader, QuantConfig(mode="qat"))`` runs everything below with
ptsq's built-in loop (:func:`finetune`). With your own training loop::

    import ptsq.qat

    qat_model = ptsq.qat.prepare(model, example_inputs=(x,))
    ptsq.qat.calibrate(qat_model, loader, max_batches=8)   # ranges as PTQ would set them, before training
    schedule = ptsq.qat.Schedule(total_steps=len(loader) * epochs)
    for step, (x, y) in enumerate(batches):           # your own loop, optimizer and loss
        schedule.step(qat_model, step)                  # freezes BN stats, then observers, on time
        loss = criterion(qat_model(x), y); loss.backward(); opt.step(); opt.zero_grad()
    qm = ptsq.qat.convert(qat_model, check_inputs=[(x,)])
    qm.save("model_int8.pt")

When things freeze (:class:`Schedule`, fractions of the total steps; ``QuantConfig.qat``):

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
calibration first made little difference there but removes the dependence on the first batch.

Capture is torch.fx (``prepare_qat_fx``, see ``ptsq.engines.fx.qat``) with the backend's default QAT
qconfig mapping; skip rules and kernels ptsq measured as broken (PReLU in torch 2.14) stay fp32. With
``QuantConfig(engine="pt2e")`` (the default once torch.ao.quantization is gone) capture is torch.export and
torchao's ``prepare_qat_pt2e`` (``ptsq.engines.pt2e.qat``); the artifact is a .pt2 program.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Iterable, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from ptsq import artifact, legacy, manifest
from ptsq.backends import activate, qconfig_name, resolve_backend
from ptsq.calibration import as_args
from ptsq.config import QatOptions, QuantConfig
from ptsq.engines.base import EngineResult
from ptsq.errors import ConfigError, DataError, first_line
from ptsq.fidelity import compare
from ptsq.progress import task
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


def _pt2e(model: nn.Module) -> bool:
    state = getattr(model, _STATE, None)
    return state is not None and state.get("engine") == "pt2e"


def _engine_helpers(model: nn.Module) -> Any:
    """The engine package whose QAT helpers (freeze_bn, set_observers, ...) handle ``model``."""
    if _pt2e(model):
        import ptsq.engines.pt2e

        return ptsq.engines.pt2e
    import ptsq.engines.fx

    return ptsq.engines.fx


def freeze_bn(model: nn.Module) -> None:
    """Stop updating BatchNorm running statistics (fused Conv+BN QAT modules and plain BN)."""
    _engine_helpers(model).freeze_bn(model)


def freeze_observers(model: nn.Module) -> None:
    """Stop updating quantization ranges; fake quantization keeps using the last ones."""
    _engine_helpers(model).set_observers(model, False)


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[Any], *, max_batches: int | None = None) -> int:
    """Set the fake-quantization ranges from ``batches`` before training, as PTQ calibration would.

    Without it the ranges start from whatever the first training batch shows, in train mode (BatchNorm
    on batch statistics), which is neither the model being deployed nor a representative sample. Runs in
    eval mode with observers on and no gradients; restores the model's train/eval mode. Each batch is a
    tensor, a tuple of model inputs, or ``(inputs, labels)`` (labels ignored). Returns the batches used.
    """
    was_training = model.training
    model.eval()
    _engine_helpers(model).set_observers(model, True)
    used = 0
    for batch in batches:
        if max_batches is not None and used >= max_batches:
            break
        model(*as_args(batch, model))  # (inputs, labels) when forward takes one input
        used += 1
    model.train(was_training)
    if used == 0:
        raise ConfigError("QAT calibration got no batches", "pass at least one batch of training inputs")
    return used


def prepare(
    model: nn.Module, example_inputs: tuple[Any, ...], *, config: QuantConfig | None = None, qconfig_mapping: Any = None
) -> fx.GraphModule:
    """A copy of ``model`` with fake quantization inserted, in train mode, ready for fine-tuning.

    ``qconfig_mapping`` (advanced) replaces the backend's default QAT ``QConfigMapping``, e.g. to
    train for narrower ranges than int8.
    """
    if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        raise ConfigError("QAT needs the original Python nn.Module", "pass the model object, not TorchScript")
    config = (config or QuantConfig()).replace(mode="qat")
    backend = resolve_backend(config.backend)
    activate(backend)
    example = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if config.engine == "pt2e":
        from ptsq.engines.pt2e import prepare_qat

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared, notes = prepare_qat(model, example, config)
    else:
        legacy.require("QAT on the fx engine", "use QuantConfig(engine='pt2e') (torchao's prepare_qat_pt2e)")
        from ptsq.engines.fx import prepare_qat

        prepared, notes = prepare_qat(model, example, config, backend, qconfig_mapping)
    state = {"engine": config.engine if config.engine == "pt2e" else "fx", "backend": backend, "config": config,
             "example": example, "notes": notes, "source_sha256": artifact.state_hash(model)}  # fmt: skip
    setattr(prepared, _STATE, state)
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
    state = getattr(prepared, _STATE, None)
    if state is None:
        raise ConfigError("convert() needs a model returned by ptsq.qat.prepare()", "call ptsq.qat.prepare first")
    backend, config, example = state["backend"], state["config"], state["example"]
    activate(backend)
    t0 = time.perf_counter()
    trained = copy.deepcopy(prepared).eval()
    checks = [tuple(a) if isinstance(a, (tuple, list)) else (a,) for a in (check_inputs or [example])]
    notes = list(state["notes"])
    if _pt2e(prepared):
        converted, rows, details = _convert_pt2e(prepared, config, notes)
    else:
        from ptsq.engines.fx import convert_qat

        converted, rows = convert_qat(trained, example, backend)
        details = {
            "capture": "torch.fx symbolic trace (prepare_qat_fx)",
            "qconfig": f"default QAT ({qconfig_name(backend)})",
            "freeze": config.freeze,
        }
    ref = reference.eval() if reference is not None else trained
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fid = compare(ref, converted, checks)
    check = {
        **fid.to_dict(),
        "batches": len(checks),
        "held_out": check_inputs is not None,
        "against": "fp32 reference" if reference is not None else "fake-quantized (QAT) model",
        "passed": fid.sqnr_db >= config.warn_sqnr_db,
    }
    result = EngineResult(module=converted, precision=rows, notes=notes, details=details)
    calibration = {"samples": 0, "source": "quantization-aware training (ranges from training batches)"}
    built = manifest.build(
        model=trained, example=example, config=config, engine=state.get("engine", "fx"), backend=backend, check=check,
        precision=[r.to_dict() for r in rows], details=details, notes=result.notes,
        calibration={**calibration, **(source or {})},
    )  # fmt: skip
    built["source_weights_sha256"] = state["source_sha256"]
    qm = QuantizedModel(result, built, example)
    qm.stats["seconds"] = round(time.perf_counter() - t0, 2)
    return qm


def _convert_pt2e(prepared: fx.GraphModule, config: QuantConfig, notes: list[str]) -> tuple[Any, Any, dict[str, Any]]:
    from ptsq.engines.pt2e import CompiledProgram, convert_qat

    converted, rows, more = convert_qat(prepared)
    notes.extend(more)
    details: dict[str, Any] = {
        "capture": "torch.export (prepare_qat_pt2e)",
        "quantizer": "torchao X86InductorQuantizer (QAT) + ptsq (conv1d, int8 data movement)",
        "runtime": "inductor (freezing)",
    }
    return (CompiledProgram(converted).eval() if config.pt2e.compile else converted), rows, details


def finetune(
    model: nn.Module,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    options: QatOptions | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune a :func:`prepare` model with SGD (momentum 0.9) and cross-entropy.

    ``data`` is re-iterable (a DataLoader) yielding ``(inputs, labels)``; its ``len`` sets the
    schedule. The first ``calibration_batches`` batches first set the quantization ranges in eval mode
    (:func:`calibrate`), so training starts from the PTQ model rather than from ranges seen on one
    train-mode batch. The learning rate decays from ``lr`` to 0 on a cosine over the steps, so the
    last steps settle on the fixed grids instead of jumping between rounding levels. Returns the
    loss/accuracy history per epoch.
    """
    o = options or QatOptions()
    per_epoch = len(data) if isinstance(data, Sized) else None
    if per_epoch is None and not o.max_steps:
        raise ConfigError("fine-tuning data has no length", "pass a DataLoader or set qat.max_steps")
    total = min(x for x in (per_epoch * o.epochs if per_epoch else None, o.max_steps or None) if x is not None)
    schedule = Schedule(total, freeze_bn_at=o.freeze_bn_at, freeze_observers_at=o.freeze_observers_at)
    calibrated = calibrate(model, data, max_batches=o.calibration_batches) if o.calibration_batches else 0
    opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=0.9)
    cosine = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total)))
    history: list[dict[str, float]] = []
    step = 0
    model.train()
    with task("QAT", total, progress) as update:
        for epoch in range(o.epochs):
            seen = correct = 0
            loss_sum = 0.0
            for x, y in data:
                if step >= total:
                    break
                schedule.step(model, step)
                logits, loss = _train_step(model, opt, x, y)
                cosine.step()
                step += 1
                seen += len(y)
                correct += int((logits.argmax(1) == y).sum())
                loss_sum += loss * len(y)
                update(step, f"epoch {epoch + 1}/{o.epochs} loss {loss_sum / seen:.3f} acc {correct / seen:.3f}")
            if seen:
                history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "accuracy": correct / seen})
    model.eval()
    return {"steps": step, "epochs": history, "lr": o.lr, "lr_schedule": "cosine", "freeze_bn_at": o.freeze_bn_at,
            "freeze_observers_at": o.freeze_observers_at, "calibration_batches": calibrated}  # fmt: skip


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x: Any, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    try:
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
    except Exception as exc:
        raise DataError(f"a training batch failed in the model: {first_line(exc)}", "check the training data") from None
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return logits, float(loss.detach())


def check_classes(model: nn.Module, example: tuple[Any, ...], classes: int, what: str) -> None:
    """The model's score count must equal the number of labelled classes."""
    with torch.inference_mode():
        out = model.eval()(*example)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ConfigError(
            "QAT fine-tuning needs a classifier that outputs (batch, classes) scores",
            "use ptsq.qat.prepare/convert with your own training loop for other models",
        )
    if out.shape[1] != classes:
        raise DataError(
            f"{what} has {classes} classes but the model outputs {out.shape[1]} scores",
            f"give one sub-folder per model class ({out.shape[1]}), named so their sorted order is the class order",
        )


def quantize_qat(
    model: nn.Module,
    data: Any,
    config: QuantConfig,
    *,
    example_inputs: tuple[Any, ...] | None = None,
    progress: bool = True,
    source: dict[str, Any] | None = None,
) -> QuantizedModel:
    """prepare -> calibrate -> :func:`finetune` on labelled ``data`` -> convert, checked on two batches.

    ``data``: a DataLoader (or any re-iterable with a length) of ``(inputs, labels)``, or a labelled
    dataset such as :class:`ptsq.data.labelled.LabelledFolder` (batched with ``config.qat.batch_size``).
    """
    if data is None:
        raise ConfigError(
            "QAT needs labelled training data (or a training function)",
            "pass --train-data DIR with one sub-folder per class, or call ptsq.qat.prepare/convert "
            "from Python with your own training loop",
        )
    loader = data
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.DataLoader):
        g = torch.Generator().manual_seed(config.seed)
        loader = torch.utils.data.DataLoader(data, batch_size=config.qat.batch_size, shuffle=True, generator=g)
    first_x, _ = next(iter(loader))
    example = tuple(example_inputs) if example_inputs is not None else (first_x[:1],)
    classes = getattr(data, "classes", None)
    if classes is not None:
        check_classes(model, example, len(classes), "the training data")
    prepared = prepare(model, example, config=config)
    history = finetune(prepared, loader, config.qat, progress=progress)
    checks = []
    for x, _ in loader:
        checks.append((x,))
        if len(checks) == 2:
            break
    qm = convert(prepared, check_inputs=checks, source=source)
    qm.manifest["training"] = {**history, **({"classes": list(classes), "images": len(data)} if classes else {})}
    return qm


__all__ = ["Schedule", "calibrate", "convert", "finetune", "freeze_bn", "freeze_observers", "prepare", "quantize_qat"]
