"""Per-layer sensitivity of an int8 model: which layers move the output, and what keeping each in fp32 buys.

Quantize once, then for every int8 conv/linear:
- ``layer_sqnr_db``: the SQNR of its int8 output against the fp32 value at the same point of the
  calibrated fp32 graph (errors accumulated from earlier layers included);
- ``solo_fp32_sqnr_db``: the SQNR of the model's final output when that one layer alone runs in fp32
  (dequantize -> fp32 layer -> quantize with the int8 layer's own output scale), everything else int8.
  This reuses the calibrated observers: no re-calibration per layer, one int8 forward per layer;
- ``gain_db``: solo_fp32_sqnr_db minus the all-int8 SQNR. Layers are ranked by it.

Engines say which layers can run in fp32 through :class:`FloatLayers`: the FX engine's int8 modules are
swapped here (:class:`FxFloatLayers`); the PT2E engine hands one over in ``EngineResult.debug``. PT2E's
swaps run on its reference (uncompiled) program, so its gains are taken against that program's own
all-int8 figure, while the headline stays the self-check's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ptsq.algorithms.float_layers import swappable_layers, with_float_layers
from ptsq.calibration import as_args, batch_size
from ptsq.config import QuantConfig
from ptsq.engines.base import EngineResult
from ptsq.errors import ConfigError, DataError, QuantizationError
from ptsq.fidelity import FidelityMeter, sqnr_db
from ptsq.modes.check import capture_outputs
from ptsq.progress import task

MIN_GAIN_DB = 1.0  # a layer is worth keeping in fp32 only if it lifts the output SQNR this much
ENGINES = ("fx", "pt2e")  # the engines whose int8 layers can be put back to fp32 without re-calibrating


class FloatLayers(Protocol):
    """The int8 layers of one quantized model that can run in fp32, reusing its calibration."""

    def names(self) -> list[str]:
        """Layer names (what ``--skip name:`` takes), in execution order."""
        ...

    def with_float(self, names: Iterable[str]) -> nn.Module:
        """The model with the named layers in fp32; with none, the int8 model the swaps are made in."""
        ...

    def layer_outputs(
        self, names: Sequence[str], args: tuple[Any, ...]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(fp32, int8) output of each named layer when the model runs ``args``."""
        ...


class FxFloatLayers:
    """The FX engine's int8 modules, swapped for float copies from its calibrated (observed) graph."""

    def __init__(self, converted: nn.Module, observed: nn.Module) -> None:
        self.converted, self.observed = converted, observed

    def names(self) -> list[str]:
        return swappable_layers(self.converted, self.observed)

    def with_float(self, names: Iterable[str]) -> nn.Module:
        names = list(names)
        return with_float_layers(self.converted, self.observed, names) if names else self.converted

    def layer_outputs(
        self, names: Sequence[str], args: tuple[Any, ...]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return capture_outputs(self.observed, names, args), capture_outputs(self.converted, names, args)


def float_layers(result: EngineResult) -> FloatLayers | None:
    """What an engine's result offers for putting layers back to fp32 (None: nothing)."""
    layers = result.debug.get("float_layers")
    if layers is not None:
        return layers  # type: ignore[no-any-return]
    observed = result.debug.get("observed")
    return FxFloatLayers(result.module, observed) if observed is not None else None


def check_engine(feature: str, config: QuantConfig, ray: Any = None) -> None:
    """A one-line error, before any quantization, for an engine whose layers cannot be put back to fp32
    (or, with ``ray``, sent to Ray workers)."""
    if config.engine not in ENGINES:
        raise ConfigError(
            f"{feature} runs on the fx and pt2e engines only, not {config.engine!r}",
            "drop --engine (or the recipe's engine) to use the default engine",
        )
    if ray is not None and config.engine == "pt2e":
        # an exported program carries export-time state (fake tensors, patched train/eval) that does not pickle
        raise ConfigError(
            f"{feature} on Ray runs on the fx engine only: PT2E's programs cannot be sent to workers",
            "drop --ray: the layer trials then run in this process",
        )


@dataclass
class LayerSensitivity:
    name: str
    op: str
    layer_sqnr_db: float
    solo_fp32_sqnr_db: float
    gain_db: float


@dataclass
class SensitivityReport:
    baseline_sqnr_db: float
    baseline_agreement: float | None
    samples: int
    layers: list[LayerSensitivity] = field(default_factory=list)  # ranked, most harmful first
    keep_fp32: list[str] = field(default_factory=list)
    keep_fp32_sqnr_db: float | None = None  # final SQNR with all of keep_fp32 in fp32 together

    def skip_options(self) -> str:
        return " ".join(f"--skip name:{n}" for n in self.keep_fp32)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skip_options"] = self.skip_options()
        return _finite(d)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) else (round(obj, 3) if math.isfinite(obj) else (999.0 if obj > 0 else -999.0))
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _outputs(model: Callable[..., Any], batches: Sequence[tuple[Any, ...]]) -> list[Any]:
    with torch.inference_mode():
        return [model(*args) for args in batches]


def _score(ref: list[Any], got: list[Any]) -> tuple[float, float | None]:
    meter = FidelityMeter()
    for r, g in zip(ref, got):
        meter.update(r, g)
    fid = meter.result()
    return fid.sqnr_db, fid.top1_agreement


def layer_sqnrs(layers: FloatLayers, names: Sequence[str], batches: Sequence[tuple[Any, ...]]) -> dict[str, float]:
    """SQNR of each named layer's int8 output against the fp32 output at the same point."""
    ref: dict[str, list[torch.Tensor]] = {}
    got: dict[str, list[torch.Tensor]] = {}
    for args in batches:
        fp32_out, int8_out = layers.layer_outputs(names, args)
        for n, t in fp32_out.items():
            ref.setdefault(n, []).append(t.reshape(-1))
        for n, t in int8_out.items():
            got.setdefault(n, []).append(t.reshape(-1))
    out = {}
    for n in names:
        if n in ref and n in got and sum(t.numel() for t in ref[n]) == sum(t.numel() for t in got[n]):
            out[n] = sqnr_db(torch.cat(ref[n]), torch.cat(got[n]))
    return out


def solo_fp32_sqnr(ctx: tuple[FloatLayers, Sequence[tuple[Any, ...]], list[Any]], name: str) -> float:
    """One ranking job: the output SQNR with layer ``name`` alone in fp32. ``ctx``: (the model's float
    layers, batches, fp32 outputs on them)."""
    layers, batches, ref = ctx
    solo, _ = _score(ref, _outputs(layers.with_float([name]), batches))
    return solo


def per_layer(
    job: Callable[[Any, str], Any],
    ctx: Any,
    names: Sequence[str],
    *,
    cluster: Any = None,
    step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """``job(ctx, name)`` for every layer name: here one after another, or as Ray tasks on ``cluster``.

    The same function runs either way, so the values are the same; on Ray, ``ctx`` (the models and
    batches) is sent once and every worker process deserialises it once. ``step(1)`` after each layer.
    """
    tick = step or (lambda _n: None)
    if cluster is None:
        out = {}
        for name in names:
            out[name] = job(ctx, name)
            tick(1)
        return out
    from ptsq.distributed.fanout import fan_out

    done = fan_out(job, [(n, (n,)) for n in names], cluster, shared=ctx, on_result=lambda _i, _o: tick(1))
    failed = [o for o in done if not o.ok]
    if failed:
        raise QuantizationError(
            f"{len(failed)} of {len(names)} layer trials failed on Ray; first: {failed[0].key}: {failed[0].error}",
            "run without --ray to see the error here, or check the workers' memory",
        )
    return {o.key: o.value for o in done}


def rank_layers(
    fp32: nn.Module,
    converted: nn.Module,
    layers: FloatLayers,
    batches: Sequence[tuple[Any, ...]],
    ops: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    cluster: Any = None,
) -> tuple[float, float | None, list[LayerSensitivity]]:
    """(all-int8 SQNR, agreement, layers ranked by what keeping each alone in fp32 gains).

    ``cluster``: a connected :class:`ptsq.distributed.cluster.Cluster` to try the layers as Ray tasks.
    """
    ref = _outputs(fp32, batches)
    base, agree = _score(ref, _outputs(converted, batches))
    swapped_in = layers.with_float([])  # PT2E: the reference program, not the compiled one
    swap_base = base if swapped_in is converted else _score(ref, _outputs(swapped_in, batches))[0]
    names = layers.names()
    per_layer_sqnr = layer_sqnrs(layers, names, batches)
    solo = per_layer(solo_fp32_sqnr, (layers, batches, ref), names, cluster=cluster, step=progress)
    rows = []
    for name in names:
        op = (ops or {}).get(name) or _op_name(converted, name)
        rows.append(LayerSensitivity(name, op, per_layer_sqnr.get(name, math.nan), solo[name], solo[name] - swap_base))
    rows.sort(key=lambda r: (-r.gain_db if math.isfinite(r.gain_db) else -1e9, r.layer_sqnr_db))
    return base, agree, rows


def _op_name(model: nn.Module, name: str) -> str:
    try:
        return type(model.get_submodule(name)).__name__
    except AttributeError:
        return ""


def choose_fp32(rows: Sequence[LayerSensitivity], top: int = 3, min_gain_db: float = MIN_GAIN_DB) -> list[str]:
    """The layers worth keeping in fp32: the top few whose gain is at least ``min_gain_db``."""
    return [r.name for r in rows[:top] if r.gain_db >= min_gain_db]


def analyze(
    model: nn.Module,
    calibration: Iterable[Any],
    *,
    config: QuantConfig | None = None,
    transform: Callable[[Any], Any] | None = None,
    top: int = 3,
    min_gain_db: float = MIN_GAIN_DB,
    progress: bool = False,
    ray: Any = None,
    workers: int | None = None,
) -> SensitivityReport:
    """Quantize ``model`` once and rank its int8 layers by sensitivity on the calibration data.

    The ranking is measured on the samples quantize's self-check held back from calibration, so the
    all-int8 SQNR equals the self-check's.
    ``ray``: ``"auto"``, a cluster address or a Cluster: the per-layer trials run as Ray tasks
    (``workers`` at once); the report is the same as without.
    """
    from ptsq.distributed.cluster import using
    from ptsq.modes.static import quantize_static

    config = config or QuantConfig()
    check_engine("analyze", config, ray)
    batches = [as_args(transform(b) if transform else b, model) for b in calibration]
    if not batches:
        raise DataError("the calibration data is empty", "give a folder with at least one image")
    was = model.training
    # connected first: a missing extra or an unreachable cluster is said before minutes of quantization
    with using(ray, workers) as cluster:
        qm = quantize_static(model, batches, config, progress=progress)
        layers = float_layers(qm.result)
        if layers is None:
            engine = qm.manifest["engine"]
            raise ConfigError(f"the {engine} engine cannot put its int8 layers back to fp32", "use --engine fx or pt2e")
        measure = qm.held_back or batches[-1:]  # the self-check's very samples: its figures are the check's
        ops = {r.name: r.op for r in qm.result.precision}
        model.eval()
        try:
            total = len(layers.names())
            with task("per-layer sensitivity (each layer alone in fp32)", total, progress) as update:
                done = [0]

                def step(n: int) -> None:
                    done[0] += n
                    update(done[0])

                base, agree, rows = rank_layers(
                    model, qm.result.module, layers, measure, ops, progress=step, cluster=cluster
                )
            keep = choose_fp32(rows, top, min_gain_db)
            together = None
            if keep:
                together, _ = _score(_outputs(model, measure), _outputs(layers.with_float(keep), measure))
        finally:
            model.train(was)
    samples = sum(batch_size(a) for a in measure)
    return SensitivityReport(base, agree, samples, rows, keep, together)
