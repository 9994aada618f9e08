"""A histogram observer whose range is chosen by a pluggable rule (percentile, MSE, entropy).

``HistogramObserver`` collects a 2048-bin histogram of every value it sees, widening and re-binning
as the range grows. A rule here (a :class:`HistogramRangeObserver` subclass) keeps that collection
and replaces only the range choice: :meth:`choose_range` gets the bin counts and the bin edges'
extent and returns (lo, hi). Two families carry the collection: torch.ao's observer (the FX engine's
prepare needs it) and torchao's copy (PT2E's convert recognises only torchao observers, and it is the
one left once torch.ao.quantization is gone); :func:`observer_for` puts a rule on either.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

import torch

FAMILIES = {"torch.ao": "torch.ao.quantization.observer", "torchao": "torchao.quantization.pt2e.observer"}


def default_family() -> str:
    """torch.ao's observers while torch.ao.quantization is here, torchao's once it is gone."""
    from ptsq import legacy

    return "torch.ao" if legacy.available() else "torchao"


def observer_module(family: str | None = None) -> ModuleType:
    """The module holding a family's MinMaxObserver, MovingAverageMinMaxObserver, HistogramObserver, ..."""
    return importlib.import_module(FAMILIES[family or default_family()])


class HistogramRangeObserver:
    """A range rule on a histogram observer (mixed into a family's ``HistogramObserver`` by :func:`observer_for`)."""

    def choose_range(self, hist: torch.Tensor, lo: float, hi: float) -> tuple[float, float]:
        raise NotImplementedError

    def chosen_range(self) -> tuple[float, float]:
        lo, hi = float(self.min_val), float(self.max_val)
        if not (hi > lo) or float(self.histogram.sum()) == 0:
            return lo, hi
        return self.choose_range(self.histogram.detach().double().cpu(), lo, hi)

    @torch.jit.export
    def calculate_qparams(self):  # type: ignore[no-untyped-def]
        if self.min_val == float("inf") and self.max_val == float("-inf"):
            return super().calculate_qparams()  # type: ignore[misc]  # uninitialised: the base's warning and default
        lo, hi = self.chosen_range()
        return self._calculate_qparams(torch.tensor(lo), torch.tensor(hi))  # type: ignore[attr-defined]

    # ------------------------------------------------------------ shared helpers for the rules
    def levels(self) -> int:
        return int(self.quant_max) - int(self.quant_min) + 1

    @staticmethod
    def centers(n: int, lo: float, hi: float) -> torch.Tensor:
        width = (hi - lo) / n
        return lo + width * (torch.arange(n, dtype=torch.float64) + 0.5)


@functools.cache
def observer_for(rule: type, family: str | None = None) -> type:
    """``rule`` as an observer class of ``family`` (default: :func:`default_family`), named like the rule."""
    family = family or default_family()
    base = observer_module(family).HistogramObserver
    name = rule.__name__.replace("Rule", "Observer")
    return type(name, (rule, base), {"__module__": rule.__module__, "__qualname__": name})


def quant_error(
    hist: torch.Tensor, centers: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, levels: int
) -> torch.Tensor:
    """Expected squared error of affine quantization over [lo, hi] (batched: lo/hi are (K,)) for a histogram."""
    lo = torch.minimum(lo, torch.zeros_like(lo))  # the quantized range always holds zero
    hi = torch.maximum(hi, torch.zeros_like(hi))
    scale = ((hi - lo) / (levels - 1)).clamp_min(1e-12)[:, None]
    zp = torch.round(-lo[:, None] / scale)
    q = torch.clamp(torch.round(centers[None, :] / scale) + zp, 0, levels - 1)
    err = (centers[None, :] - (q - zp) * scale) ** 2
    return (err * hist[None, :]).sum(1)
