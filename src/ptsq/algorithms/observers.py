"""Activation observers by name, for QConfig activations, and the range each one would quantize over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.ao.quantization.observer import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    ObserverBase,
)

from ptsq.algorithms import OBSERVER_NAMES
from ptsq.algorithms._histogram import HistogramRangeObserver
from ptsq.errors import ConfigError


def observer_class(name: str) -> type[ObserverBase]:
    from ptsq.algorithms.entropy import EntropyObserver
    from ptsq.algorithms.mse import MSEObserver
    from ptsq.algorithms.percentile import PercentileObserver

    classes: dict[str, type[ObserverBase]] = {
        "minmax": MinMaxObserver,
        "moving-average": MovingAverageMinMaxObserver,
        "histogram": HistogramObserver,
        "mse": MSEObserver,
        "percentile": PercentileObserver,
        "entropy": EntropyObserver,
    }
    if name not in classes:
        raise ConfigError(f"observer {name!r} is unknown", f"choose one of: {', '.join(OBSERVER_NAMES)}")
    return classes[name]


def activation_factory(name: str, base: Callable[..., Any]) -> Callable[..., Any]:
    """``base`` (a qconfig's activation partial) with its observer class replaced by ``name``'s, same arguments."""
    partial = getattr(base, "p", base)  # torch.ao's _PartialWrapper holds a functools.partial
    keywords = dict(getattr(partial, "keywords", {}) or {})
    cls = observer_class(name)
    if not issubclass(cls, HistogramObserver):
        keywords.pop("bins", None)
        keywords.pop("upsample_rate", None)
    return cls.with_args(**keywords)


def chosen_range(obs: ObserverBase) -> tuple[float, float] | None:
    """The (lo, hi) a per-tensor activation observer will quantize over, or None if it cannot say."""
    if isinstance(obs, HistogramRangeObserver):
        return obs.chosen_range()
    if isinstance(obs, HistogramObserver):
        if obs.min_val.numel() != 1 or float(obs.histogram.sum()) == 0:
            return None
        lo, hi = obs._non_linear_param_search()
        return float(lo), float(hi)
    min_val, max_val = getattr(obs, "min_val", None), getattr(obs, "max_val", None)
    if isinstance(min_val, torch.Tensor) and min_val.numel() == 1 and isinstance(max_val, torch.Tensor):
        return float(min_val), float(max_val)
    return None


def activation_observers(qmap: Any, name: str) -> Any:
    """``qmap`` with every activation observer of the global qconfig's kind replaced by ``name``'s.

    Entries with their own activation (fixed-qparams ops such as sigmoid, reuse-input ops) are kept.
    """
    from torch.ao.quantization.qconfig import QConfig

    base = qmap.global_qconfig
    if name == "histogram" or base is None:
        return qmap
    act = activation_factory(name, base.activation)
    qmap = qmap.set_global(QConfig(activation=act, weight=base.weight))
    for pattern, qc in list(qmap.object_type_qconfigs.items()):
        if qc is not None and qc.activation is base.activation:
            qmap.set_object_type(pattern, QConfig(activation=act, weight=qc.weight))
    return qmap
