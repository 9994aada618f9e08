"""A histogram observer whose range is chosen by a pluggable rule (percentile, MSE, entropy).

torch.ao's ``HistogramObserver`` collects a 2048-bin histogram of every value it sees, widening and
re-binning as the range grows. Subclasses here keep that collection and replace only the range
choice: :meth:`choose_range` gets the bin counts and the bin edges' extent and returns (lo, hi).
"""

from __future__ import annotations

import torch
from torch.ao.quantization.observer import HistogramObserver


class HistogramRangeObserver(HistogramObserver):
    """Collect a histogram like torch.ao; pick the quantization range with :meth:`choose_range`."""

    def choose_range(self, hist: torch.Tensor, lo: float, hi: float) -> tuple[float, float]:
        raise NotImplementedError

    def chosen_range(self) -> tuple[float, float]:
        lo, hi = float(self.min_val), float(self.max_val)
        if not (hi > lo) or float(self.histogram.sum()) == 0:
            return lo, hi
        return self.choose_range(self.histogram.detach().double().cpu(), lo, hi)

    @torch.jit.export
    def calculate_qparams(self):  # type: ignore[no-untyped-def, override]
        if self.min_val == float("inf") and self.max_val == float("-inf"):
            return super().calculate_qparams()  # uninitialised: torch's warning and default
        lo, hi = self.chosen_range()
        return self._calculate_qparams(torch.tensor(lo), torch.tensor(hi))

    # ------------------------------------------------------------ shared helpers for the rules
    def levels(self) -> int:
        return int(self.quant_max) - int(self.quant_min) + 1

    @staticmethod
    def centers(n: int, lo: float, hi: float) -> torch.Tensor:
        width = (hi - lo) / n
        return lo + width * (torch.arange(n, dtype=torch.float64) + 0.5)


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
