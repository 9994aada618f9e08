"""Turn an in-memory FX int8 model into TorchScript, and prove the TorchScript computes the same thing.

A model that quantized must also save. Tracing is the first route (it follows any Python the model
runs, including fp32 parts kept as opaque leaves), but it fails or goes wrong on some models:
an int8 op whose schema the tracer cannot match (``F.elu(x, True)`` lowers to ``quantized::elu`` with
a bool ``alpha``), outputs nested deeper than the tracer understands (``{"foo": [x]}`` inside a list),
or shape-dependent Python that a batch-1 example bakes in. So each route's module is checked against
the in-memory int8 model on the example and the held-back check batches, and the first route that
agrees is kept:

1. ``torch.jit.trace`` on the example inputs;
2. ``torch.jit.script`` of the converted graph (FX writes plain Python that TorchScript compiles);
3. ``torch.jit.trace`` on a whole check batch (when the example was one sample).

Freezing (``torch.jit.freeze``) is applied when the frozen module still agrees. The route taken is
recorded in the manifest (``details.torchscript``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ptsq.errors import QuantizationError, first_line
from ptsq.fidelity import flatten_outputs

CHECK_BATCHES = 4  # held-back batches a saved module is compared on (besides the example)


def _structure(out: Any) -> Any:
    """The nesting of an output with lists and tuples alike (TorchScript may return either)."""
    if isinstance(out, torch.Tensor):
        return "T"
    if isinstance(out, dict):
        return {str(k): _structure(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [_structure(o) for o in out]
    return type(out).__name__


def mismatch(ref_model: Callable[..., Any], test_model: Callable[..., Any], inputs: Sequence[tuple[Any, ...]]) -> str:
    """Why ``test_model`` does not compute what ``ref_model`` does on ``inputs`` ("" when it does)."""
    with torch.inference_mode():
        for i, args in enumerate(inputs):
            try:
                ref, got = ref_model(*args), test_model(*args)
            except Exception as exc:  # a route that cannot run an input is not faithful
                return f"input {i}: {first_line(exc)}"
            if _structure(ref) != _structure(got):
                return f"input {i}: the outputs differ in structure"
            for r, g in zip(flatten_outputs(ref), flatten_outputs(got)):
                if r.shape != g.shape:
                    return f"input {i}: output shapes differ ({tuple(r.shape)} vs {tuple(g.shape)})"
                if not torch.equal(r, g):
                    # frozen fp32 islands may fold ops (float rounding), which can move one int8 step
                    scale = float(r.abs().max()) if r.numel() else 0.0
                    err = float((r.float() - g.float()).abs().max()) if r.numel() else 0.0
                    if r.is_floating_point() and err <= 1e-5 * max(1.0, scale):
                        continue
                    return f"input {i}: outputs differ by up to {err:.3g}"
    return ""


def _trace(module: nn.Module, example: tuple[Any, ...]) -> torch.jit.ScriptModule:
    return torch.jit.trace(module, example, check_trace=False, strict=False)


def _script(module: nn.Module, example: tuple[Any, ...]) -> torch.jit.ScriptModule:
    from torch import fx

    work = copy.deepcopy(module)
    for sub in work.modules():  # FX writes the forward's type hints as aliases TorchScript cannot resolve
        if isinstance(sub, fx.GraphModule):
            for node in sub.graph.nodes:
                node.type = None
            sub.recompile()
    return torch.jit.script(work)


def to_torchscript(
    module: nn.Module,
    example: tuple[Any, ...],
    checks: Sequence[tuple[Any, ...]] = (),
    *,
    freeze: bool = True,
) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """The first TorchScript route whose module agrees with ``module``; (module, facts for the manifest)."""
    checks = list(checks)[:CHECK_BATCHES]
    inputs = [example, *checks]
    routes: list[tuple[str, Callable[..., torch.jit.ScriptModule], tuple[Any, ...]]] = [
        ("trace", _trace, example),
        ("script", _script, example),
    ]
    routes += [(f"trace on check batch {i}", _trace, c) for i, c in enumerate(checks[:1]) if c is not example]
    failures: list[str] = []
    with torch.no_grad():
        for name, build, ex in routes:
            try:
                scripted = build(module, ex)
            except Exception as exc:  # a route that does not apply to this model; try the next
                failures.append(f"{name}: {first_line(exc, 160)}")
                continue
            why = mismatch(module, scripted, inputs)
            if why:
                failures.append(f"{name}: {why}")
                continue
            facts: dict[str, Any] = {"torchscript": name, "frozen": False}
            if failures:
                facts["torchscript_fallback"] = failures
            if freeze:
                try:
                    frozen = torch.jit.freeze(scripted.eval())
                except Exception:  # freezing is an optimisation; the unfrozen module is right
                    frozen = None
                if frozen is not None and not mismatch(module, frozen, inputs):
                    scripted, facts["frozen"] = frozen, True
            return scripted, facts
    raise QuantizationError(
        "the int8 model cannot be saved as TorchScript: " + "; ".join(failures),
        "keep the layer named above in fp32 with --skip, or save with another engine (--engine pt2e or onnx)",
    )


__all__ = ["CHECK_BATCHES", "mismatch", "to_torchscript"]
