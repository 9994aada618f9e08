"""How close an int8 model's outputs are to fp32: SQNR, cosine, top-1 agreement, top-5 overlap, KL."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """Tensors of a model output (tensor, tuple/list/dict nesting), dequantized, in a stable order."""
    if isinstance(out, torch.Tensor):
        return [out.dequantize() if out.is_quantized else out]
    if isinstance(out, dict):
        return [t for k in sorted(out, key=str) for t in flatten_outputs(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_outputs(o)]
    return []


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    ref = ref.detach().double()
    noise = (ref - test.detach().double()).pow(2).sum()
    signal = ref.pow(2).sum()
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return float(10 * torch.log10(signal / noise))


def looks_like_scores(t: torch.Tensor) -> bool:
    """A (batch, classes) output with several classes: top-1 agreement is meaningful."""
    return t.dim() == 2 and t.shape[1] >= 2 and t.is_floating_point()


@dataclass
class Fidelity:
    samples: int
    sqnr_db: float
    cosine: float
    top1_agreement: float | None = None
    top5_overlap: float | None = None
    kl: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


class FidelityMeter:
    """Accumulate fp32 vs candidate outputs batch by batch; :meth:`result` summarises."""

    def __init__(self) -> None:
        self.ref: list[torch.Tensor] = []
        self.test: list[torch.Tensor] = []

    def update(self, ref_out: Any, test_out: Any) -> None:
        r, t = flatten_outputs(ref_out), flatten_outputs(test_out)
        if len(r) != len(t) or any(a.shape != b.shape for a, b in zip(r, t)):
            raise ValueError("fp32 and int8 outputs differ in structure or shape")
        keep = [i for i, a in enumerate(r) if a.numel()]  # empty outputs (no detections) carry no signal
        r, t = [r[i] for i in keep], [t[i] for i in keep]
        try:
            self.ref.append(torch.cat([a.reshape(a.shape[0] if a.dim() else 1, -1).float() for a in r], dim=1))
            self.test.append(torch.cat([b.reshape(b.shape[0] if b.dim() else 1, -1).float() for b in t], dim=1))
        except RuntimeError:  # no tensors left, or per-image outputs of different lengths (detections)
            raise ValueError("fp32 and int8 outputs cannot be compared element-wise") from None
        self._scores = len(r) == 1 and looks_like_scores(r[0])

    def result(self) -> Fidelity:
        return fidelity(torch.cat(self.ref), torch.cat(self.test), scores=getattr(self, "_scores", False))


def fidelity(ref: torch.Tensor, test: torch.Tensor, *, scores: bool | None = None) -> Fidelity:
    """Compare (N, D) outputs row by row. ``scores``: treat rows as class scores (default: guess)."""
    ref, test = ref.double(), test.double()
    cos = torch.nn.functional.cosine_similarity(ref, test, dim=1, eps=1e-12).mean()
    fid = Fidelity(samples=int(ref.shape[0]), sqnr_db=sqnr_db(ref, test), cosine=float(cos))
    if scores is None:
        scores = looks_like_scores(ref)
    if scores:
        fid.top1_agreement = float((ref.argmax(1) == test.argmax(1)).double().mean())
        k = min(5, ref.shape[1])
        a, b = ref.topk(k, dim=1).indices, test.topk(k, dim=1).indices
        overlap = [len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(a, b)]
        fid.top5_overlap = float(sum(overlap) / len(overlap))
        p = torch.log_softmax(ref, dim=1)
        q = torch.log_softmax(test, dim=1)
        fid.kl = float((p.exp() * (p - q)).sum(1).mean())
    return fid


def compare(ref_model: Any, test_model: Any, batches: Iterable[tuple[Any, ...]]) -> Fidelity:
    meter = FidelityMeter()
    with torch.inference_mode():
        for args in batches:
            meter.update(ref_model(*args), test_model(*args))
    return meter.result()
