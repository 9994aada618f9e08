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
    """A (batch, classes) output with several classes: top-1 agreement may be meaningful."""
    return t.dim() == 2 and t.shape[1] >= 2 and t.is_floating_point()


OUTPUT_KINDS = ("scores", "probabilities", "values")
# fp32 itself barely separates classes whose probabilities are this close: int8 picking the other one is a
# near-tie, not an error. On held-back photo crops EfficientNet-Lite1's disagreements were mostly such
# flips (e.g. 0.116 vs 0.114) while it agreed 20/20 on the labelled ImageNet photos.
TIE_GAP = 0.1


def output_kind(outputs: list[torch.Tensor]) -> str:
    """What fp32 outputs are, from their shapes and values (one tensor per output, batch first).

    - ``scores``: one (batch, classes) output with several classes, not of unit row norm (logits), or
      rows of probabilities summing to 1 (softmax): top-1/top-5 agreement and KL apply;
    - ``probabilities``: every value in [0, 1] otherwise (sigmoid outputs: per-frame or per-pixel
      probabilities, multi-label heads): the share of decisions at 0.5 that agree, and the mean absolute error;
    - ``values``: anything else (regression, embeddings, feature maps, boxes): SQNR and cosine only.
    """
    if not outputs or not all(t.is_floating_point() for t in outputs):
        return "values"
    unit = all(bool(((t >= 0) & (t <= 1)).all()) for t in outputs)
    if len(outputs) == 1 and looks_like_scores(outputs[0]):
        t = outputs[0].double()
        if unit:
            return "scores" if bool(((t.sum(1) - 1).abs() < 1e-3).all()) else "probabilities"
        norms = t.norm(dim=1)
        return "values" if bool(((norms - 1).abs() < 1e-3).all()) else "scores"  # L2-normalised embeddings
    return "probabilities" if unit else "values"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion k/n (sound at 0/n and n/n, unlike k/n +- 2 sigma)."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class Fidelity:
    samples: int
    sqnr_db: float
    cosine: float
    top1_agreement: float | None = None
    top5_overlap: float | None = None
    kl: float | None = None
    output: str = "values"  # scores | probabilities | values (see output_kind)
    agree: int | None = None  # samples (scores) or decisions (probabilities) that agree: k of ``compared``
    compared: int | None = None
    clear_agree: int | None = None  # scores: samples that agree, or whose flip is a near-tie (TIE_GAP)
    clear_agreement: float | None = None  # clear_agree / compared: what the self-check's verdict uses
    agreement_interval: tuple[float, float] | None = None  # 95 % Wilson interval of the verdict's agreement
    decision_agreement: float | None = None  # probabilities: share of values on the same side of 0.5
    mean_abs_error: float | None = None  # probabilities: mean |p_int8 - p_fp32|

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["agreement_interval"] is not None:
            d["agreement_interval"] = [round(v, 4) for v in d["agreement_interval"]]
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


class FidelityMeter:
    """Accumulate fp32 vs candidate outputs batch by batch; :meth:`result` summarises.

    ``output`` is one of :data:`OUTPUT_KINDS`, or ``auto`` to decide from the fp32 outputs (:func:`output_kind`).
    """

    def __init__(self, output: str = "auto") -> None:
        self.ref: list[torch.Tensor] = []
        self.test: list[torch.Tensor] = []
        self.output = output
        self._kinds: list[str] = []

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
        self._kinds.append(output_kind(r))

    def kind(self) -> str:
        if self.output != "auto":
            return self.output
        kinds = set(self._kinds)
        if len(kinds) == 1:
            return kinds.pop()
        # a batch of logits outside [0, 1] shows that in-range batches were logits too
        return "values" if "values" in kinds or not kinds else "scores"

    def result(self) -> Fidelity:
        return fidelity(torch.cat(self.ref), torch.cat(self.test), output=self.kind())


def fidelity(
    ref: torch.Tensor, test: torch.Tensor, *, scores: bool | None = None, output: str | None = None
) -> Fidelity:
    """Compare (N, D) outputs row by row. ``output``: scores | probabilities | values (default: from
    ``scores``, else guessed from ``ref``); the metrics that fit it are filled in."""
    ref, test = ref.double(), test.double()
    cos = torch.nn.functional.cosine_similarity(ref, test, dim=1, eps=1e-12).mean()
    n = int(ref.shape[0])
    fid = Fidelity(samples=n, sqnr_db=sqnr_db(ref, test), cosine=float(cos))
    if output is None:
        output = ("scores" if scores else "values") if scores is not None else output_kind([ref])
    fid.output = output
    if output == "scores" and ref.dim() == 2 and ref.shape[1] >= 2:
        mine, theirs = ref.argmax(1), test.argmax(1)
        same = int((mine == theirs).sum())
        fid.agree, fid.compared = same, n
        fid.top1_agreement = same / n if n else None
        k = min(5, ref.shape[1])
        a, b = ref.topk(k, dim=1).indices, test.topk(k, dim=1).indices
        overlap = [len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(a, b)]
        fid.top5_overlap = float(sum(overlap) / len(overlap))
        if bool(((ref >= 0) & (ref <= 1)).all()) and bool(((ref.sum(1) - 1).abs() < 1e-3).all()):
            p, q = ref.clamp_min(1e-12).log(), test.clamp_min(1e-12).log()  # already probabilities
        else:
            p, q = torch.log_softmax(ref, dim=1), torch.log_softmax(test, dim=1)
        fid.kl = float((p.exp() * (p - q)).sum(1).mean())
        probs = p.exp()
        gap = probs.gather(1, mine[:, None]) - probs.gather(1, theirs[:, None])
        clear = int(((mine == theirs) | (gap[:, 0] <= TIE_GAP)).sum())
        fid.clear_agree, fid.clear_agreement = clear, (clear / n if n else None)
        fid.agreement_interval = wilson(clear, n)
    elif output == "probabilities":
        same = int(((ref >= 0.5) == (test >= 0.5)).sum())
        total = int(ref.numel())
        fid.agree, fid.compared = same, total
        fid.decision_agreement = same / total if total else None
        fid.agreement_interval = wilson(same, total)
        fid.mean_abs_error = float((ref - test).abs().mean())
    return fid


def compare(ref_model: Any, test_model: Any, batches: Iterable[tuple[Any, ...]], output: str = "auto") -> Fidelity:
    meter = FidelityMeter(output)
    with torch.inference_mode():
        for args in batches:
            meter.update(ref_model(*args), test_model(*args))
    return meter.result()
