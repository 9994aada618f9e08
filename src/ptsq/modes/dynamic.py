"""Dynamic quantization: int8 weights, activations quantized at run time (Linear, LSTM, GRU, RNN cells).

No calibration data: each activation's range is measured on the fly, per call. The recipe:

1. The engine makes every supported layer int8: ``fx`` swaps modules for torch.ao's dynamic ones (an
   eager swap, so models FX cannot trace work too; see ``ptsq.engines.fx.dynamic``), ``onnx`` exports the
   model and runs onnxruntime's dynamic quantizer (an ``.onnx`` artifact; ``ptsq.engines.onnx.dynamic``),
   ``pt2e`` runs torchao's dynamic x86 recipe on Linear layers after timing each (``ptsq.engines.pt2e.dynamic``).
2. Accuracy control (fx): when the mean per-sample cosine between fp32 and int8 outputs on the check
   inputs falls below ``config.dynamic.min_cosine``, each int8 layer's own damage is measured (that layer
   alone in int8), and the worst layers go back to fp32 one by one until the budget holds. The onnx path
   reports a missed budget in the notes.

The artifact reloads with :func:`ptsq.load` in a process without the model code; ``engine="auto"``
builds both, checks both against fp32 and keeps the faster faithful one (``ptsq.select``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ptsq import legacy, manifest
from ptsq.algorithms.fallback import greedy_fallback
from ptsq.backends import activate, resolve_backend
from ptsq.calibration import as_positional, example_from_batch
from ptsq.config import QuantConfig
from ptsq.engines import get_engine
from ptsq.engines.base import EngineResult, LayerPrecision
from ptsq.engines.common import skip_targets
from ptsq.errors import ConfigError, InputShapeError, QuantizationError, first_line
from ptsq.fidelity import compare, flatten_outputs
from ptsq.modes.dynamic_layers import in_module_order, unquantized_layers
from ptsq.quantized import QuantizedModel

DYNAMIC_ENGINES = ("fx", "pt2e", "onnx")
MAX_FALLBACK_FRACTION = 0.5  # never put back more than half the layers: then dynamic mode is the wrong tool


def _args(batch: Any) -> tuple[Any, ...]:
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)


def per_sample_cosine(ref_model: Any, test_model: Any, batches: Sequence[tuple[Any, ...]]) -> torch.Tensor:
    """Cosine between fp32 and int8 outputs, one value per sample (all output tensors concatenated)."""
    sims = []
    with torch.inference_mode():
        for args in batches:
            r, t = flatten_outputs(ref_model(*args)), flatten_outputs(test_model(*args))
            n = r[0].shape[0] if r and r[0].dim() else 1
            rr = torch.cat([a.reshape(n, -1).double() for a in r], 1)
            tt = torch.cat([b.reshape(n, -1).double() for b in t], 1)
            sims.append(nn.functional.cosine_similarity(rr, tt, dim=1, eps=1e-12))
    return torch.cat(sims)


def _skipped(model: nn.Module, layers: dict[str, nn.Module], config: QuantConfig) -> dict[str, str]:
    """Supported layers inside what the skip rules name (a rule matching nothing is an error)."""
    targets = skip_targets(model, config)
    chosen = {}
    for layer in layers:
        reason = next((r for t, r in targets.items() if layer == t or layer.startswith(t + ".")), None)
        if reason is not None:
            chosen[layer] = reason
    return chosen


def _check_inputs(
    model: nn.Module, data: Iterable[Any] | None, example_inputs: Any, labelled: bool | None = None
) -> tuple[nn.Module, tuple[Any, ...], list, tuple[str, ...] | None]:
    """(model to quantize, example inputs for the artifact, batches to check against fp32, keyword names).

    Batches are taken as given; dicts naming ``forward`` parameters become positional inputs (through
    :class:`~ptsq.calibration.KeywordInputs` unless they are ``forward``'s leading parameters). The
    example is one sample of the first batch when the model accepts one, else the whole batch.
    """
    runner, checks, names = model, None, None
    if data is not None:
        runner, checks, names = as_positional(model, list(data), labelled)
    if example_inputs is None:
        if checks:
            example_inputs = example_from_batch(runner, checks[0])[0]
        elif callable(getattr(model, "example_inputs", None)):
            example_inputs = model.example_inputs()  # the model's own convention
        else:
            raise ConfigError(
                "dynamic mode needs example inputs",
                "pass example_inputs=..., check batches, or give the model an example_inputs() method "
                "(CLI: --calib FILE with input tensors, or --calib sentences.txt --tokenizer DIR)",
            )
    elif isinstance(example_inputs, dict) and names:
        example_inputs = tuple(example_inputs[n] for n in names)
    example = _args(example_inputs)
    checks = checks if checks is not None else [example]
    if not checks:
        raise ConfigError("the check inputs are empty", "pass at least one input tuple, or None to use the example")
    try:
        with torch.inference_mode():
            runner(*checks[0])
    except Exception as exc:
        raise InputShapeError(
            f"the model rejects the example inputs: {first_line(exc)}",
            "give it inputs it accepts: --calib inputs.pt (torch.save of a tensor, a tuple in forward's order or "
            "a dict naming forward's inputs), --calib sentences.txt --tokenizer DIR for text, or an "
            "example_inputs() method on the model",
        ) from None
    return runner, example, checks, names


def quantize_dynamic(
    model: nn.Module,
    data: Iterable[Any] | None = None,
    config: QuantConfig | None = None,
    *,
    example_inputs: Any = None,
    check_inputs: Sequence[Any] | None = None,
    source: dict[str, Any] | None = None,
    labelled: bool | None = None,
) -> QuantizedModel:
    """Dynamic int8 quantization of ``model``'s Linear/LSTM/GRU layers, checked against fp32.

    ``data`` (or ``check_inputs``) is a list of input tuples (or tensors) to compare int8 with fp32 on;
    ``example_inputs`` (default: the first of them, or the model's ``example_inputs()``) is used to trace
    the artifact. The input model is never modified.
    """
    config = (config or QuantConfig(engine=legacy.default_engine("dynamic"))).replace(mode="dynamic")
    if config.engine not in DYNAMIC_ENGINES:
        raise ConfigError(
            f"dynamic mode runs on the {', '.join(DYNAMIC_ENGINES)} engine, not {config.engine!r}",
            f"choose --engine {', '.join(DYNAMIC_ENGINES)} or auto",
        )
    if config.engine == "fx":
        legacy.require("dynamic mode on the fx engine", "use --engine onnx (the default without it) or pt2e")
    from ptsq.engines.fx import DYNAMIC_TYPES, supported_layers

    backend = resolve_backend(config.backend)
    activate(backend)
    layers = supported_layers(model)
    if not layers:
        kinds = ", ".join(c.__name__ for c in DYNAMIC_TYPES)
        raise QuantizationError(
            f"dynamic quantization found no supported layer in {type(model).__name__} (it quantizes {kinds})",
            "use --mode static (static post-training quantization) for convolutional models",
        )
    t0 = time.perf_counter()
    user_model = model
    was_training = model.training
    model.eval()
    try:
        given = check_inputs if check_inputs is not None else data
        model, example, checks, names = _check_inputs(user_model, given, example_inputs, labelled)
        layers = supported_layers(model)  # under the keyword adapter's "model." when there is one
        fallback = _skipped(model, layers, config)
        if len(fallback) == len(layers):
            raise ConfigError("skip rules keep every supported layer in fp32", "drop some --skip rules")
        torch.manual_seed(config.seed)
        run = {"onnx": _onnx, "pt2e": _pt2e}.get(config.engine, _fx)
        result, sims = run(model, layers, fallback, checks, example, config)
        result.debug["check_batches"] = checks  # saving proves the artifact against the int8 model on these
        fid = compare(model, result.module, checks)
    finally:
        user_model.train(was_training)
    # every other layer with weights (convs, norms…) stays fp32 in dynamic mode: listed, with why
    result.precision = in_module_order(model, result.precision + unquantized_layers(model, layers))
    budget = config.dynamic.min_cosine
    check: dict[str, Any] = {
        **fid.to_dict(),
        "cosine_mean": round(float(sims.mean()), 6),
        "cosine_min": round(float(sims.min()), 6),
        "batches": len(checks),
        "held_out": check_inputs is not None or data is not None,
        "passed": budget == 0 or float(sims.mean()) >= budget,
    }
    calibration = {"samples": 0, "source": "none: dynamic mode measures activation ranges at run time"}
    built = manifest.build(
        model=user_model, example=example, config=config, engine=config.engine, backend=backend, check=check,
        precision=[r.to_dict() for r in result.precision], details=result.details, notes=result.notes,
        calibration={**calibration, **(source or {})}, keywords=names,
    )  # fmt: skip
    qm = QuantizedModel(result, built, example)
    qm.stats["seconds"] = round(time.perf_counter() - t0, 2)
    return qm


def _fx(
    model: nn.Module, layers: dict[str, nn.Module], fallback: dict[str, str], checks: list, example: tuple,
    config: QuantConfig,
) -> tuple[EngineResult, torch.Tensor]:  # fmt: skip
    from ptsq.engines.fx import swap_dynamic

    opts = config.dynamic
    int8 = [n for n in layers if n not in fallback]
    qmodel = swap_dynamic(model, int8, config.per_channel, opts.full_range)
    sims = per_sample_cosine(model, qmodel, checks)
    notes: list[str] = []
    sensitivity: dict[str, float] = {}
    if opts.min_cosine and float(sims.mean()) < opts.min_cosine:
        qmodel, sims, sensitivity, put_back = _accuracy_control(model, int8, checks, config)
        for name in put_back:
            fallback[name] = (
                f"kept in fp32: its int8 version alone moves the output most (cosine "
                f"{1 - sensitivity[name]:.4f}); budget min_cosine={opts.min_cosine}"
            )
        notes.append(
            f"accuracy control: {len(put_back)} layer(s) kept in fp32 to hold mean cosine >= {opts.min_cosine}"
        )
        if float(sims.mean()) < opts.min_cosine:
            notes.append(f"mean cosine {float(sims.mean()):.4f} is still below the budget {opts.min_cosine}")
    rows = [
        LayerPrecision(n, type(m).__name__, "fp32" if n in fallback else "int8", fallback.get(n, ""))
        for n, m in layers.items()
    ]
    details = {
        "capture": "eager module swap (torch.ao.quantization.quantize_dynamic)",
        "weights": "per-channel (Linear)" if config.per_channel else "per-tensor",
        "activations": "dynamic per-tensor uint8, " + ("full range" if opts.full_range else "7-bit (reduce_range)"),
        "min_cosine": opts.min_cosine or None,
        "sensitivity": {k: round(v, 6) for k, v in sorted(sensitivity.items(), key=lambda kv: -kv[1])[:20]},
        "freeze": config.freeze,
    }
    return EngineResult(module=qmodel, precision=rows, notes=notes, details=details), sims


def _onnx(
    model: nn.Module, layers: dict[str, nn.Module], fallback: dict[str, str], checks: list, example: tuple,
    config: QuantConfig,
) -> tuple[EngineResult, torch.Tensor]:  # fmt: skip
    get_engine("onnx")  # a one-line error when onnxruntime is missing
    from ptsq.engines.onnx import quantize_onnx_dynamic

    qmodel, rows, details, notes, fp32_onnx = quantize_onnx_dynamic(model, example, config, layers, fallback)
    sims = per_sample_cosine(model, qmodel, checks)
    budget = config.dynamic.min_cosine
    _say_below_budget(notes, sims, budget, "onnx", "use --engine fx, or keep layers fp32 with --skip")
    details = {**details, "min_cosine": budget or None}
    debug = {"fp32_onnx": fp32_onnx}  # the exported fp32 model, for baselines
    return EngineResult(module=qmodel, precision=rows, notes=notes, details=details, debug=debug), sims


def _say_below_budget(notes: list[str], sims: torch.Tensor, budget: float, engine: str, hint: str) -> None:
    """Engines without the greedy fp32 fallback only say when the cosine budget is missed."""
    if budget and float(sims.mean()) < budget:
        notes.append(
            f"mean cosine {float(sims.mean()):.4f} is below the budget {budget}; the {engine} engine "
            f"does not put layers back to fp32 ({hint})"
        )


def _pt2e(
    model: nn.Module, layers: dict[str, nn.Module], fallback: dict[str, str], checks: list, example: tuple,
    config: QuantConfig,
) -> tuple[EngineResult, torch.Tensor]:  # fmt: skip
    get_engine("pt2e")  # a one-line error when torchao is missing
    from ptsq.engines.pt2e import quantize_pt2e_dynamic

    qmodel, rows, details, notes = quantize_pt2e_dynamic(model, example, config, layers, fallback)
    sims = per_sample_cosine(model, qmodel, checks)
    budget = config.dynamic.min_cosine
    _say_below_budget(notes, sims, budget, "pt2e", "keep layers fp32 with --skip")
    return EngineResult(module=qmodel, precision=rows, notes=notes, details={**details, "min_cosine": budget}), sims


def _accuracy_control(
    model: nn.Module, int8: list[str], checks: list[tuple[Any, ...]], config: QuantConfig
) -> tuple[nn.Module, torch.Tensor, dict[str, float], list[str]]:
    """Rank layers by 1 - cosine with only that layer in int8; put the worst back until the budget holds."""
    from ptsq.engines.fx import swap_dynamic

    opts = config.dynamic

    def swapped(fp32_layers: list[str]) -> tuple[nn.Module, torch.Tensor]:
        qmodel = swap_dynamic(model, [n for n in int8 if n not in fp32_layers], config.per_channel, opts.full_range)
        return qmodel, per_sample_cosine(model, qmodel, checks)

    sensitivity = {}
    for name in int8:
        alone = swap_dynamic(model, [name], config.per_channel, opts.full_range)
        sensitivity[name] = 1.0 - float(per_sample_cosine(model, alone, checks).mean())
    order = sorted(int8, key=lambda n: -sensitivity[n])
    put_back, trials = greedy_fallback(
        order, swapped, lambda r: float(r[1].mean()), lambda r: float(r[1].mean()) >= opts.min_cosine,
        base_score=-1.0, limit=max(1, int(len(int8) * MAX_FALLBACK_FRACTION)), only_improving=False,
    )  # fmt: skip
    qmodel, sims = trials[-1].result
    return qmodel, sims, sensitivity, put_back


__all__ = ["DYNAMIC_ENGINES", "per_sample_cosine", "quantize_dynamic"]
