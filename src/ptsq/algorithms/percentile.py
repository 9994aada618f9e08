"""Percentile range setting: quantize over [p_low, p_high] of the calibration values, clip the rest."""

from __future__ import annotations

import torch

from ptsq.algorithms._histogram import HistogramRangeObserver, observer_for


class PercentileRule(HistogramRangeObserver):
    """Range = the ``100 - percentile`` and ``percentile`` quantiles of everything observed (default 99.99)."""

    def __init__(self, *args, percentile: float = 99.99, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile {percentile} must be in (50, 100]")
        self.percentile = float(percentile)

    def choose_range(self, hist: torch.Tensor, lo: float, hi: float) -> tuple[float, float]:
        cdf = torch.cumsum(hist, 0) / hist.sum()
        n = hist.numel()
        width = (hi - lo) / n
        q = self.percentile / 100.0
        i_hi = int(torch.searchsorted(cdf, torch.tensor(q, dtype=cdf.dtype)).clamp(max=n - 1))
        i_lo = int(torch.searchsorted(cdf, torch.tensor(1.0 - q, dtype=cdf.dtype)).clamp(max=n - 1))
        new_lo = lo + width * i_lo if lo < 0 else lo  # non-negative data keeps its exact minimum
        new_hi = lo + width * (i_hi + 1)
        return new_lo, max(new_hi, new_lo + width)


PercentileObserver = observer_for(PercentileRule)  # on torch.ao's HistogramObserver, or torchao's once torch.ao is gone
