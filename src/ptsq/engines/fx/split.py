"""When a model's own forward cannot be traced, quantize the parts of it that can.

FX traces a model from its top-level ``forward``; one untraceable line there (a loop over a list
of images, ``if x.sum() > 0``, a call into numpy) used to make the whole model unquantizable.
Here the untraceable forward stays eager fp32 Python (a *shell*), and every child it calls is
quantized as its own FX *unit*, recursing into children whose forward is itself untraceable at
its root. Units are prepared, the whole model is calibrated once (the eager shells call the
observed units, so calibration still streams), then each unit is converted in place.

The typical case is a torchvision detection model: the top-level forward batches a list of
images and post-processes boxes (anchors, NMS) in Python; the backbone, FPN and heads are units
and run int8, the post-processing stays fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from ptsq.algorithms.cleanup import clamp_ranges, cleanup
from ptsq.algorithms.keep_float import KeepFloat, wrap_modules
from ptsq.algorithms.tracing import TraceFailure, try_trace
from ptsq.backends import qconfig_name
from ptsq.config import QuantConfig
from ptsq.engines.base import EngineResult, LayerPrecision
from ptsq.engines.fx.capture import make_traceable
from ptsq.engines.fx.fixed_inputs import free_fixed_inputs
from ptsq.engines.fx.precision import precision_map
from ptsq.engines.fx.qconfig import qconfig_mapping
from ptsq.engines.fx.speed import slow_layers
from ptsq.errors import QuantizationError, TraceError

_Inputs = dict[str, tuple[tuple[Any, ...], dict[str, Any]]]


def called_inputs(model: nn.Module, example_args: tuple[Any, ...]) -> _Inputs:
    """The (args, kwargs) each submodule is first called with when ``model`` runs ``example_args``."""
    seen: _Inputs = {}
    hooks = []

    def detach(v: Any) -> Any:
        return v.detach().clone() if isinstance(v, torch.Tensor) else v

    for name, mod in model.named_modules():
        if not name:
            continue

        def pre(_m: nn.Module, args: Any, kwargs: Any, name: str = name) -> None:
            if name not in seen:
                seen[name] = (tree_map(detach, tuple(args)), tree_map(detach, dict(kwargs)))

        hooks.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
    try:
        with torch.no_grad():
            model(*example_args)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _only_tensors(args: tuple[Any, ...]) -> bool:
    leaves, _ = tree_flatten(args)
    return bool(leaves) and all(isinstance(a, torch.Tensor) for a in leaves)


def _has_compute(mod: nn.Module) -> bool:
    return any(True for _ in mod.parameters())


def plan(model: nn.Module, root_failure: TraceFailure, inputs: _Inputs) -> tuple[list[str], list[LayerPrecision]]:
    """Units to quantize (qualified names) and the shells left in fp32, with why."""
    units: list[str] = []
    shells: list[LayerPrecision] = []

    def visit(name: str, mod: nn.Module, reason: str) -> None:
        shells.append(LayerPrecision(name or "(top level)", type(mod).__name__, "fp32", reason))
        for child_name, child in mod.named_children():
            qname = f"{name}.{child_name}" if name else child_name
            if isinstance(child, KeepFloat):  # fp32 by a skip rule or a kernel probe
                shells.append(LayerPrecision(qname, type(child.inner).__name__, "fp32", child.reason))
                continue
            if not _has_compute(child) or qname not in inputs:
                continue  # nothing to quantize, or never called
            args, kwargs = inputs[qname]
            if kwargs or not _only_tensors(args):
                visit(qname, child, "its forward takes non-tensor or keyword arguments: runs in fp32 Python")
                continue
            failure = try_trace(child)
            if failure is None or failure.module:
                units.append(qname)  # traceable at its root (inner failures fall back as usual)
            else:
                visit(qname, child, f"forward cannot be traced, runs in fp32 Python: {failure.describe()}")

    visit("", model, f"top-level forward cannot be traced, runs in fp32 Python: {root_failure.describe()}")
    return units, shells


def _set(model: nn.Module, qname: str, new: nn.Module) -> None:
    parent_name, _, child = qname.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def quantize_split(
    work: nn.Module,
    calibrate: Callable[[Callable[..., Any]], int],
    example_args: tuple[Any, ...],
    config: QuantConfig,
    backend: str,
    root_failure: TraceFailure,
    notes: list[str],
) -> EngineResult:
    """Quantize each traceable unit of ``work`` (modified in place) around its untraceable shells."""
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    inputs = called_inputs(work, example_args)
    units, shells = plan(work, root_failure, inputs)
    notes.append(
        f"top-level forward cannot be traced ({root_failure.describe()}); it runs in fp32 Python and "
        f"{len(units)} submodule(s) it calls are quantized separately"
    )
    if not units:
        raise TraceError(
            f"FX cannot trace the model's top-level forward: {root_failure.describe()}",
            "move the untraceable code into a submodule (ptsq keeps such submodules in fp32), "
            "avoid Python control flow on tensor values, or wrap plain functions with torch.fx.wrap",
        )
    qmap, custom = qconfig_mapping(config, backend)

    prepared: dict[str, nn.Module] = {}
    rows_skipped: list[LayerPrecision] = []
    for name in units:
        unit = work.get_submodule(name)
        args = inputs[name][0]
        try:
            notes.extend(f"in '{name}': {n}" for n in make_traceable(unit, strict=False))
        except TraceError as exc:  # untraceable once its own untraceable parts were made opaque
            rows_skipped.append(LayerPrecision(name, type(unit).__name__, "fp32", f"cannot be traced: {exc}"))
            continue
        unit, cleaned = cleanup(unit, config.cleanup)
        notes.extend(f"in '{name}': {n}" for n in cleaned)
        if config.speed_guard > 0:
            slow = slow_layers(unit, args, backend, config.speed_guard, config.speed.threads)
            wrap_modules(unit, slow)
            if slow:
                notes.append(f"in '{name}': speed guard kept {len(slow)} layer(s) in fp32")
        try:
            prepared[name] = prepare_fx(unit, qmap, args, prepare_custom_config=custom)
        except Exception as exc:
            raise QuantizationError(
                f"prepare_fx failed on '{name}': {exc}".splitlines()[0], f"keep it in fp32 with --skip name:{name}"
            ) from exc
        free_fixed_inputs(prepared[name], qmap.global_qconfig.activation)
        _set(work, name, prepared[name])
    with torch.no_grad():
        calibrate(work)
    clamped = sum(clamp_ranges(p) for p in prepared.values()) if "clamp-ranges" in config.cleanup else 0
    if clamped:
        notes.append(f"clean-up: {clamped} activations quantized over their ReLU/ReLU6/clamp range")
    rows: list[LayerPrecision] = list(shells) + rows_skipped
    for name, p in prepared.items():
        try:
            converted = convert_fx(p)
        except Exception as exc:
            raise QuantizationError(
                f"convert_fx failed on '{name}': {exc}".splitlines()[0], f"keep it in fp32 with --skip name:{name}"
            ) from exc
        _set(work, name, converted)
        for r in precision_map(converted, inputs[name][0], backend):
            rows.append(LayerPrecision(f"{name}.{r.name}", r.op, r.precision, r.reason))
    return EngineResult(
        module=work,
        precision=rows,
        notes=notes,
        details={
            "capture": "torch.fx symbolic trace per submodule (top-level forward untraceable)",
            "qconfig": qconfig_name(backend),
            "freeze": config.freeze,
            "units": units,
        },
    )
