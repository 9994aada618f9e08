"""MSE range setting: the [lo, hi] that minimises the expected squared quantization error on the histogram.

Unlike torch.ao's ``HistogramObserver`` (a greedy approximate L2 search that trims one bin at a time),
this evaluates the exact error of the affine int8 quantizer, rounding and clipping included, on a
grid of candidate ranges (shrinking the low and high ends independently).
"""

from __future__ import annotations

import torch

from ptsq.algorithms._histogram import HistogramRangeObserver, observer_for, quant_error

GRID = 64


class MSERule(HistogramRangeObserver):
    """Range minimising E[(x - Q(x))^2] over the calibration histogram."""

    def choose_range(self, hist: torch.Tensor, lo: float, hi: float) -> tuple[float, float]:
        centers = self.centers(hist.numel(), lo, hi)
        fracs = torch.linspace(1.0 / GRID, 1.0, GRID, dtype=torch.float64)
        his = torch.clamp(hi * fracs, min=0.0) if hi > 0 else torch.zeros(1, dtype=torch.float64)
        los = torch.clamp(lo * fracs, max=0.0) if lo < 0 else torch.zeros(1, dtype=torch.float64)
        if lo > 0:  # all positive: the range starts at zero anyway
            los = torch.zeros(1, dtype=torch.float64)
        grid_lo, grid_hi = torch.meshgrid(los, his, indexing="ij")
        grid_lo, grid_hi = grid_lo.reshape(-1), grid_hi.reshape(-1)
        keep = grid_hi > grid_lo
        grid_lo, grid_hi = grid_lo[keep], grid_hi[keep]
        err = torch.cat([
            quant_error(hist, centers, grid_lo[i : i + 512], grid_hi[i : i + 512], self.levels())
            for i in range(0, grid_lo.numel(), 512)
        ])  # fmt: skip
        best = int(torch.argmin(err))
        return float(grid_lo[best]), float(grid_hi[best])


MSEObserver = observer_for(MSERule)  # on torch.ao's HistogramObserver, or torchao's once torch.ao is gone
