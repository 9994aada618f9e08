"""Activation observers by name, for QConfig activations, and the range each one would quantize over.

``family``: ``"torch.ao"`` (the FX engine's prepare needs torch.ao observers) or ``"torchao"`` (PT2E's
convert recognises only torchao's); the default follows :func:`ptsq.algorithms._histogram.default_family`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch

from ptsq.algorithms import OBSERVER_NAMES
from ptsq.algorithms._histogram import HistogramRangeObserver, observer_for, observer_module
from ptsq.errors import ConfigError


def observer_class(name: str, family: str | None = None) -> type:
    from ptsq.algorithms.entropy import EntropyRule
    from ptsq.algorithms.mse import MSERule
    from ptsq.algorithms.percentile import PercentileRule

    base = observer_module(family)
    classes: dict[str, Callable[[], type]] = {
        "minmax": lambda: base.MinMaxObserver,
        "moving-average": lambda: base.MovingAverageMinMaxObserver,
        "histogram": lambda: base.HistogramObserver,
        "mse": lambda: observer_for(MSERule, family),
        "percentile": lambda: observer_for(PercentileRule, family),
        "entropy": lambda: observer_for(EntropyRule, family),
    }
    if name not in classes:
        raise ConfigError(f"observer {name!r} is unknown", f"choose one of: {', '.join(OBSERVER_NAMES)}")
    return classes[name]()


def activation_factory(name: str, base: Callable[..., Any], family: str | None = None) -> Callable[..., Any]:
    """``base`` (a qconfig's activation partial) with its observer class replaced by ``name``'s, same arguments."""
    partial = getattr(base, "p", base)  # the observers' _PartialWrapper holds a functools.partial
    keywords = dict(getattr(partial, "keywords", {}) or {})
    cls = observer_class(name, family)
    if not issubclass(cls, observer_module(family).HistogramObserver):
        keywords.pop("bins", None)
        keywords.pop("upsample_rate", None)
    return cls.with_args(**keywords)


def _histogram(obs: Any) -> bool:
    return hasattr(obs, "histogram") and hasattr(obs, "_non_linear_param_search")


def clamped(obs: Any, lo: float, hi: float) -> Any:
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


def chosen_range(obs: Any, bounds: tuple[float, float] | None = None) -> tuple[float, float] | None:
    """The (lo, hi) a per-tensor activation observer will quantize over, or None if it cannot say.

    ``bounds``: the value only reaches the model through a clamp to them (ReLU: (0, inf)); the range is
    then chosen for the clamped values, as an observer after the activation would choose it.
    """
    if bounds is not None and _histogram(obs) and obs.min_val.numel() == 1:
        obs = clamped(obs, *bounds)
    if isinstance(obs, HistogramRangeObserver):
        return obs.chosen_range()
    if _histogram(obs):
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
    act = activation_factory(name, base.activation, "torch.ao")
    qmap = qmap.set_global(QConfig(activation=act, weight=base.weight))
    for pattern, qc in list(qmap.object_type_qconfigs.items()):
        if qc is not None and qc.activation is base.activation:
            qmap.set_object_type(pattern, QConfig(activation=act, weight=qc.weight))
    return qmap
