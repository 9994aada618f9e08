"""Make a model traceable by FX: keep each submodule the tracer cannot follow in fp32, one at a time."""

from __future__ import annotations

from torch import nn

from ptsq.algorithms.keep_float import wrap_modules
from ptsq.algorithms.tracing import try_trace
from ptsq.errors import TraceError

MAX_FALLBACKS = 64
UNTRACEABLE_HINT = (
    "move the untraceable code into a submodule (ptsq keeps such submodules in fp32), "
    "avoid Python control flow on tensor values, wrap plain functions with torch.fx.wrap, "
    "or try --engine pt2e (torch.export) or --engine onnx"
)


def make_traceable(model: nn.Module, strict: bool) -> list[str]:
    """Wrap untraceable submodules of ``model`` (in place) in fp32 leaves until it traces; return notes.

    Raises :class:`TraceError` when the top-level ``forward`` itself is untraceable (its ``failure``
    attribute then carries the :class:`~ptsq.algorithms.tracing.TraceFailure`, for the split capture)
    or, with ``strict``, at the first untraceable submodule.
    """
    notes: list[str] = []
    for _ in range(MAX_FALLBACKS):
        failure = try_trace(model)
        if failure is None:
            return notes
        if failure.module == "" or strict:
            where = f"module '{failure.module}'" if failure.module else "the model's top-level forward"
            hint = UNTRACEABLE_HINT
            if strict and failure.module:
                hint = "drop --strict to keep untraceable submodules in fp32 and quantize the rest"
            err = TraceError(f"FX cannot trace {where}: {failure.describe()}", hint)
            err.failure = failure if not strict else None  # type: ignore[attr-defined]  # the split capture retries
            raise err
        wrap_modules(model, {failure.module: f"cannot be traced: {failure.describe()}"})
        notes.append(f"'{failure.module}' kept in fp32: FX cannot trace it: {failure.describe()}")
    raise TraceError("too many untraceable submodules", "try --engine pt2e or simplify the model's forward")


__all__ = ["MAX_FALLBACKS", "UNTRACEABLE_HINT", "make_traceable"]
