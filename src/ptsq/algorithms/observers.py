"""Activation observers by name, for QConfig activations, and the range each one would quantize over."""

from __future__ import annotations

import copy
import math
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


def clamped(obs: HistogramObserver, lo: float, hi: float) -> HistogramObserver:
    """A copy of ``obs`` holding the histogram of ``clamp(x, lo, hi)`` instead of ``x``'s: what an observer
    after a ReLU / ReLU6 / clamp would have collected (the mass outside piles up in the edge bins)."""
    h, n = obs.histogram, obs.histogram.numel()
    mn, mx = float(obs.min_val), float(obs.max_val)
    if not mx > mn or (mn >= lo and mx <= hi):
        return obs
    width = (mx - mn) / n
    first = min(n - 1, max(0, math.floor((lo - mn) / width))) if lo > mn else 0
    last = max(first, min(n - 1, math.ceil((hi - mn) / width) - 1)) if hi < mx else n - 1
    sub = copy.deepcopy(obs)
    kept = h[first : last + 1].clone()
    kept[0] += h[:first].sum()
    kept[-1] += h[last + 1 :].sum()
    sub.histogram, sub.bins = kept, int(kept.numel())
    sub.min_val, sub.max_val = torch.tensor(mn + first * width), torch.tensor(mn + (last + 1) * width)
    return sub


def chosen_range(obs: ObserverBase, bounds: tuple[float, float] | None = None) -> tuple[float, float] | None:
    """The (lo, hi) a per-tensor activation observer will quantize over, or None if it cannot say.

    ``bounds``: the value only reaches the model through a clamp to them (ReLU: (0, inf)); the range is
    then chosen for the clamped values, as an observer after the activation would choose it.
    """
    if bounds is not None and isinstance(obs, HistogramObserver) and obs.min_val.numel() == 1:
        obs = clamped(obs, *bounds)
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
