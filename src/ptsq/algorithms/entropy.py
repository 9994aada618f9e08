"""Entropy (KL) range setting, as TensorRT's calibrator: the clip threshold whose int8 histogram
diverges least (Kullback-Leibler) from the fp32 one.

The search runs on the histogram of |x| (bins folded around zero); non-negative data (after ReLU)
is quantized over [0, T], signed data over [-T, T] intersected with the observed range.
"""

from __future__ import annotations

import torch

from ptsq.algorithms._histogram import HistogramRangeObserver, observer_for

STRIDE = 8  # candidate thresholds are every STRIDE-th bin


def _kl_threshold(hist: torch.Tensor, levels: int) -> int:
    """Index (exclusive) of the |x| histogram bin where clipping minimises KL(P || Q)."""
    n = hist.numel()
    if n <= levels:
        return n
    best, best_i = float("inf"), n
    for i in range(levels, n + 1, STRIDE):
        p = hist[:i].clone()
        p[i - 1] += hist[i:].sum()  # outliers are clipped into the last bin
        nz = p > 0
        # quantize p's support into `levels` buckets, spread each bucket's mass over its non-empty bins
        idx = torch.div(torch.arange(i) * levels, i, rounding_mode="floor")
        mass = torch.zeros(levels, dtype=p.dtype).index_add_(0, idx, hist[:i])
        count = torch.zeros(levels, dtype=p.dtype).index_add_(0, idx, nz.to(p.dtype))
        q = torch.where(nz, mass[idx] / count[idx].clamp_min(1), torch.zeros_like(p))
        ps, qs = p[nz] / p.sum(), q[nz] / q.sum()
        kl = float((ps * torch.log(ps / qs.clamp_min(1e-12))).sum())
        if kl < best:
            best, best_i = kl, i
    return best_i


class EntropyRule(HistogramRangeObserver):
    """Clip threshold minimising KL divergence between the fp32 and the int8 histogram."""

    def choose_range(self, hist: torch.Tensor, lo: float, hi: float) -> tuple[float, float]:
        n = hist.numel()
        width = (hi - lo) / n
        edges = lo + width * torch.arange(n + 1, dtype=torch.float64)
        centers = (edges[:-1] + edges[1:]) / 2
        amax = max(abs(lo), abs(hi))
        folded_bins = n
        step = amax / folded_bins
        idx = torch.clamp((centers.abs() / step).long(), max=folded_bins - 1)
        folded = torch.zeros(folded_bins, dtype=torch.float64).index_add_(0, idx, hist)
        signed = lo < 0 < hi
        levels = self.levels() // 2 if signed else self.levels()
        t = _kl_threshold(folded, levels) * step
        if lo >= 0:
            return lo if lo > 0 else 0.0, min(hi, t)
        if hi <= 0:
            return max(lo, -t), hi
        return max(lo, -t), min(hi, t)


EntropyObserver = observer_for(EntropyRule)  # on torch.ao's HistogramObserver, or torchao's once torch.ao is gone
