"""Dynamic quantization: int8 weights, activations quantized at run time (Linear, LSTM, GRU, RNN cells).

No calibration data: each activation's range is measured on the fly, per call. The recipe:

1. Swap every supported layer for its ``torch.ao.nn.quantized.dynamic`` counterpart (eager module swap,
   so models FX cannot trace -- Hugging Face encoders with data-dependent masking -- work too).
   Linear weights are quantized per output channel (``QuantConfig.per_channel``), RNN weights per tensor.
2. Linear activations use the full 8-bit range (``full_range=True``). torch's dynamic Linear quantizes
   activations to 7 bits by default (``reduce_range``), a guard against int16 overflow in old AVX2
   kernels; on all-MiniLM-L6-v2 the 7-bit recipe gives embedding cosine 0.980 and full range 0.992.
   The self-check below measures the result either way.
3. Accuracy control: when the mean per-sample cosine between fp32 and int8 outputs on ``check_inputs``
   falls below ``min_cosine``, each int8 layer's own damage is measured (that layer alone in int8),
   and the worst layers go back to fp32 one by one until the budget holds.

The artifact is the FX engine's TorchScript file (manifest embedded, ``mode: dynamic``); it reloads
with :func:`ptsq.load` in a process without the model code.

``QuantConfig(engine="onnx")`` exports the model to ONNX instead and runs onnxruntime's dynamic
quantizer (see ``ptsq.engines.onnx_dynamic``); the artifact is an ``.onnx`` file. Step 3's per-layer
fallback is eager-only: the onnx path reports a missed budget in the notes. ``engine="auto"`` builds
both, checks both against fp32 and keeps the faster faithful one (``ptsq.engines.auto``).
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

import ptsq
from ptsq import artifact
from ptsq.backends import activate, resolve_backend
from ptsq.config import QuantConfig
from ptsq.engines.base import EngineResult, LayerPrecision
from ptsq.errors import ConfigError, InputShapeError, QuantizationError, first_line
from ptsq.fidelity import compare, flatten_outputs
from ptsq.quantized import QuantizedModel

# Layer types torch.ao's dynamic quantization has int8 kernels for.
SUPPORTED: tuple[type[nn.Module], ...] = (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell, nn.RNNCell)
DEFAULT_MIN_COSINE = 0.99
DYNAMIC_ENGINES = ("fx", "onnx")
MAX_FALLBACK_FRACTION = 0.5  # never put back more than half the layers: then dynamic mode is the wrong tool


def _full_range_linear() -> type[nn.Module]:
    import torch.ao.nn.quantized.dynamic as nnqd

    class FullRangeLinear(nnqd.Linear):
        """Dynamic int8 Linear whose activations use all 8 bits (torch's default uses 7)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False)
            return y.to(x.dtype)

        def _get_name(self) -> str:
            return "DynamicQuantizedLinear"

    return FullRangeLinear


def supported_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> module, for every layer dynamic quantization can make int8."""
    return {n: m for n, m in model.named_modules() if n and type(m) in SUPPORTED}


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


def _swap(model: nn.Module, names: Iterable[str], per_channel: bool, full_range: bool) -> nn.Module:
    """A copy of ``model`` with the named layers dynamically quantized."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig
    from torch.ao.quantization import quantize_dynamic as tq_dynamic

    work = copy.deepcopy(model)
    spec = {}
    for name in names:
        linear = isinstance(work.get_submodule(name), nn.Linear)
        spec[name] = per_channel_dynamic_qconfig if (per_channel and linear) else default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = tq_dynamic(work, spec, dtype=torch.qint8)
    if full_range:
        import torch.ao.nn.quantized.dynamic as nnqd

        cls = _full_range_linear()
        for mod in out.modules():
            if type(mod) is nnqd.Linear:
                mod.__class__ = cls
    return out


def _skipped(model: nn.Module, layers: dict[str, nn.Module], config: QuantConfig) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for rule in config.skip:
        hits = [
            n for n, m in model.named_modules() if n and rule.matches(n, f"{type(m).__module__}.{type(m).__qualname__}")
        ]
        if not hits:
            raise ConfigError(
                f"skip rule '{rule}' matches no layer of the model",
                "check the layer names with 'ptsq quantize ... --json' (precision map) and fix the rule",
            )
        for layer in layers:
            if any(layer == h or layer.startswith(h + ".") for h in hits):
                chosen.setdefault(layer, f"kept in fp32 by skip rule '{rule}'")
    return chosen


def quantize_dynamic(
    model: nn.Module,
    *,
    example_inputs: tuple[Any, ...],
    backend: str = "auto",
    config: QuantConfig | None = None,
    check_inputs: Sequence[Any] | None = None,
    min_cosine: float | None = DEFAULT_MIN_COSINE,
    full_range: bool = True,
    source: dict[str, Any] | None = None,
) -> QuantizedModel:
    """Dynamic int8 quantization of ``model``'s Linear/LSTM/GRU layers, checked against fp32.

    ``example_inputs`` is one tuple of positional inputs (used to trace the artifact);
    ``check_inputs`` is a list of input tuples (or tensors) to compare int8 with fp32 on (default:
    ``[example_inputs]``). Layers whose int8 version pulls the mean per-sample cosine below
    ``min_cosine`` are kept in fp32 (``None`` disables this). The input model is never modified.
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError("a TorchScript module cannot be quantized again", "pass the original Python nn.Module")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model is a {type(model).__name__}, not a torch.nn.Module", "pass an nn.Module")
    if min_cosine is not None and not 0.0 < min_cosine <= 1.0:
        raise ConfigError(f"min_cosine {min_cosine} must be in (0, 1]", "use e.g. 0.99, or None to disable")
    config = config or QuantConfig(mode="dynamic")
    if config.mode != "dynamic":
        config = dataclasses.replace(config, mode="dynamic")
    if config.engine == "auto":  # fx and onnx, fidelity-checked and timed; the fastest faithful one wins
        from ptsq.engines.auto import quantize_dynamic_auto

        return quantize_dynamic_auto(
            model, example_inputs=example_inputs, backend=backend, config=config, check_inputs=check_inputs,
            min_cosine=min_cosine, full_range=full_range, source=source,
        )  # fmt: skip
    if config.engine not in DYNAMIC_ENGINES:
        raise ConfigError(
            f"dynamic mode runs on the fx or onnx engine, not {config.engine!r}",
            "choose --engine fx, onnx or auto",
        )
    chosen = resolve_backend(backend if backend != "auto" else config.backend)
    activate(chosen)
    example = _args(example_inputs)
    checks = [_args(b) for b in (check_inputs if check_inputs is not None else [example])]
    if not checks:
        raise ConfigError("check_inputs is empty", "pass at least one input tuple, or None to use example_inputs")
    layers = supported_layers(model)
    if not layers:
        kinds = ", ".join(c.__name__ for c in SUPPORTED)
        raise QuantizationError(
            f"dynamic quantization found no supported layer in {type(model).__name__} (it quantizes {kinds})",
            "use --mode static (static post-training quantization) for convolutional models",
        )
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        for args in checks[:1]:
            try:
                with torch.inference_mode():
                    model(*args)
            except Exception as exc:
                raise InputShapeError(
                    f"the model rejects the example inputs: {first_line(exc)}", "pass inputs the model accepts"
                ) from None
        fallback = _skipped(model, layers, config)
        int8 = [n for n in layers if n not in fallback]
        if not int8:
            raise ConfigError("skip rules keep every supported layer in fp32", "drop some --skip rules")
        torch.manual_seed(config.seed)
        notes: list[str] = []
        sensitivity: dict[str, float] = {}
        onnx_rows, fp32_onnx = None, b""
        if config.engine == "onnx":
            from ptsq.engines import get_engine
            from ptsq.engines.onnx_dynamic import quantize_onnx_dynamic

            get_engine("onnx")  # a one-line error when onnxruntime is missing
            qmodel, onnx_rows, onnx_details, notes, fp32_onnx = quantize_onnx_dynamic(
                model, example, config, layers, fallback
            )
        else:
            qmodel = _swap(model, int8, config.per_channel, full_range)
        sims = per_sample_cosine(model, qmodel, checks)
        if onnx_rows is not None and min_cosine is not None and float(sims.mean()) < min_cosine:
            notes.append(
                f"mean cosine {float(sims.mean()):.4f} is below the budget {min_cosine}; the onnx engine "
                "does not put layers back to fp32 (use --engine fx, or keep layers fp32 with --skip)"
            )
        elif min_cosine is not None and float(sims.mean()) < min_cosine:
            qmodel, sims, sensitivity, put_back = _accuracy_control(
                model, int8, checks, config.per_channel, full_range, min_cosine
            )
            for name in put_back:
                fallback[name] = (
                    f"kept in fp32: its int8 version alone moves the output most (cosine "
                    f"{1 - sensitivity[name]:.4f}); budget min_cosine={min_cosine}"
                )
            int8 = [n for n in int8 if n not in put_back]
            notes.append(f"accuracy control: {len(put_back)} layer(s) kept in fp32 to hold mean cosine >= {min_cosine}")
            if float(sims.mean()) < min_cosine:
                notes.append(f"mean cosine {float(sims.mean()):.4f} is still below the budget {min_cosine}")
        fid = compare(model, qmodel, checks)
    finally:
        model.train(was_training)
    elapsed = time.perf_counter() - t0

    rows = onnx_rows or [
        LayerPrecision(n, type(m).__name__, "fp32" if n in fallback else "int8", fallback.get(n, ""))
        for n, m in layers.items()
    ]
    check: dict[str, Any] = {
        **fid.to_dict(),
        "cosine_mean": round(float(sims.mean()), 6),
        "cosine_min": round(float(sims.min()), 6),
        "batches": len(checks),
        "held_out": check_inputs is not None,
        "passed": min_cosine is None or float(sims.mean()) >= min_cosine,
    }
    details = {
        "capture": "eager module swap (torch.ao.quantization.quantize_dynamic)",
        "weights": "per-channel (Linear)" if config.per_channel else "per-tensor",
        "activations": "dynamic per-tensor uint8, " + ("full range" if full_range else "7-bit (reduce_range)"),
        "min_cosine": min_cosine,
        "sensitivity": {k: round(v, 6) for k, v in sorted(sensitivity.items(), key=lambda kv: -kv[1])[:20]},
        "freeze": config.freeze,
    }
    if onnx_rows is not None:
        details = {**onnx_details, "min_cosine": min_cosine}
    debug = {"fp32_onnx": fp32_onnx} if fp32_onnx else {}  # the exported fp32 model, for baselines
    result = EngineResult(module=qmodel, precision=rows, notes=notes, details=details, debug=debug)
    calibration = {"samples": 0, "source": "none: dynamic mode measures activation ranges at run time"}
    manifest = build_manifest(
        model, example, "dynamic", chosen, config, check, [r.to_dict() for r in rows], details, notes,
        calibration={**calibration, **(source or {})}, engine=config.engine,
    )  # fmt: skip
    qm = QuantizedModel(result, manifest, example)
    qm.stats["seconds"] = round(elapsed, 2)
    return qm


def _accuracy_control(
    model: nn.Module,
    int8: list[str],
    checks: list[tuple[Any, ...]],
    per_channel: bool,
    full_range: bool,
    min_cosine: float,
) -> tuple[nn.Module, torch.Tensor, dict[str, float], list[str]]:
    """Rank layers by 1 - cosine with only that layer in int8; put the worst back until the budget holds."""
    sensitivity = {}
    for name in int8:
        alone = _swap(model, [name], per_channel, full_range)
        sensitivity[name] = 1.0 - float(per_sample_cosine(model, alone, checks).mean())
    order = sorted(int8, key=lambda n: -sensitivity[n])
    put_back: list[str] = []
    limit = max(1, int(len(int8) * MAX_FALLBACK_FRACTION))
    qmodel, sims = None, None
    for name in order[:limit]:
        put_back.append(name)
        keep = [n for n in int8 if n not in put_back]
        qmodel = _swap(model, keep, per_channel, full_range)
        sims = per_sample_cosine(model, qmodel, checks)
        if float(sims.mean()) >= min_cosine:
            break
    assert qmodel is not None and sims is not None
    return qmodel, sims, sensitivity, put_back


def build_manifest(
    model: nn.Module,
    example: tuple[Any, ...],
    mode: str,
    backend: str,
    config: QuantConfig,
    check: dict[str, Any],
    precision: list[dict[str, str]],
    details: dict[str, Any],
    notes: list[str],
    *,
    calibration: dict[str, Any],
    preprocess: dict[str, Any] | None = None,
    engine: str = "fx",
) -> dict[str, Any]:
    """The manifest fields every ptsq artifact carries (same keys as static mode's)."""
    return {
        "ptsq_version": ptsq.__version__,
        "torch_version": torch.__version__,
        "engine": engine,
        "mode": mode,
        "backend": backend,
        "quantized_engine": torch.backends.quantized.engine,
        "input": {
            "shapes": [list(a.shape) for a in example if isinstance(a, torch.Tensor)],
            "dtypes": [str(a.dtype).replace("torch.", "") for a in example if isinstance(a, torch.Tensor)],
            "batch_dim": 0,
        },
        "preprocess": preprocess,
        "calibration": calibration,
        "check": check,
        "precision": precision,
        "source_weights_sha256": artifact.state_hash(model),
        "config": config.to_dict(),
        "details": details,
        "notes": notes,
    }


__all__ = ["SUPPORTED", "build_manifest", "per_sample_cosine", "quantize_dynamic", "supported_layers"]
