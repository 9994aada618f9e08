"""The self-check: samples held back (not leftover batches), metrics that fit the output, and no verdict
from too few samples."""

from __future__ import annotations

import warnings

import pytest
import torch

import ptsq
from ptsq.calibration import CalibrationStream
from ptsq.config import QuantConfig
from ptsq.errors import DataError, QuantizationWarning
from ptsq.fidelity import fidelity, output_kind, wilson
from tests.models import FrameProbabilities, SmallNet, randomize_bn


def _stream_split(sizes, **kw):
    batches = [torch.full((n, 2), float(i)) for i, n in enumerate(sizes)]
    stream = CalibrationStream(batches, **kw)
    seen = []
    stream.run(lambda x: seen.append(x))
    return torch.cat(seen), torch.cat([h[0] for h in stream.held]), stream


def test_samples_are_held_back_by_count_never_the_leftovers_of_the_last_batch():
    calibrated, held, stream = _stream_split([32, 32, 32, 32, 4])
    assert len(held) == 32 and len(calibrated) == 100  # 132 samples: 32 held back (an eighth would be 16)
    # the last 32 samples: the 4 leftovers and 28 of the batch before them, which was cut in two
    assert held[:, 0].tolist() == [3.0] * 28 + [4.0] * 4 and not stream.in_sample_check

    _, held, _ = _stream_split([64] * 10)  # 640 samples: an eighth (80) is more than 32
    assert len(held) == 80
    _, held, _ = _stream_split([8] * 5)  # 40 samples: never more than a quarter held back
    assert len(held) == 10
    _, held, _ = _stream_split([8] * 4, hold_samples=10)  # an explicit count is taken as asked
    assert len(held) == 10


def test_an_explicit_check_sample_count_larger_than_the_data_is_an_error():
    with pytest.raises(DataError, match="--check-samples 40 is not less than the 40"):
        _stream_split([8] * 5, hold_samples=40)

    def gen():  # length unknown up front: found out at the end of the stream
        yield from (torch.zeros(8, 2) for _ in range(3))

    stream = CalibrationStream(gen(), hold_samples=30)
    with pytest.raises(DataError, match="30 is not less than the 24"):
        stream.run(lambda x: None)


def test_output_kind_tells_class_scores_from_probabilities_and_values():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 10, generator=g) * 3
    assert output_kind([logits]) == "scores"
    assert output_kind([logits.softmax(1)]) == "scores"  # class probabilities: argmax is still the class
    assert output_kind([torch.sigmoid(torch.randn(16, 50, generator=g))]) == "probabilities"  # per-frame
    assert output_kind([torch.sigmoid(torch.randn(16, 1, generator=g))]) == "probabilities"
    emb = torch.nn.functional.normalize(torch.randn(16, 384, generator=g), dim=1)
    assert output_kind([emb]) == "values"  # L2-normalised embeddings: no classes
    assert output_kind([torch.randn(16, 4, 8, 8, generator=g)]) == "values"  # feature maps, boxes
    assert output_kind([logits, torch.randn(16, 4, generator=g)]) == "values"


def test_agreement_is_a_count_with_an_interval_and_near_ties_are_not_errors():
    ref = torch.tensor([[5.0, 0.0, 0.0]] * 30 + [[1.0, 0.99, -3.0]] * 2)  # two near-ties
    test = ref.clone()
    test[30:, 1] += 0.1  # int8 flips the near-ties only
    f = fidelity(ref, test, output="scores")
    assert (f.agree, f.compared, f.clear_agree) == (30, 32, 32)
    lo, hi = f.agreement_interval
    assert hi == 1.0 and 0.85 < lo < 0.95
    test[:4, 1] += 10.0  # clear flips count
    assert fidelity(ref, test, output="scores").clear_agree == 28
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def _quantize(model, batches, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qm = ptsq.quantize(model, batches, QuantConfig(speed_guard=0, speed={"check": False}, **kw), progress=False)
    return qm, [str(w.message) for w in caught if issubclass(w.category, QuantizationWarning)]


def test_the_self_check_refuses_a_verdict_on_too_few_samples():
    torch.manual_seed(0)
    model = randomize_bn(SmallNet())
    g = torch.Generator().manual_seed(1)
    few = [torch.randn(8, 3, 32, 32, generator=g) for _ in range(5)]  # 40 samples: a quarter (10) held back
    qm, warned = _quantize(model, few)
    c = qm.fidelity
    assert c["samples"] == 10 and c["passed"] is None and c["verdict"] == "too few samples"
    assert c["top1_agreement"] is not None  # the figures are still shown, just not judged
    assert any("on only 10 held-back" in w and "needs 32" in w for w in warned), warned

    enough = few + [torch.randn(8, 3, 32, 32, generator=g) for _ in range(5)]  # 80 samples: 40 held back
    qm, warned = _quantize(model, enough, check_samples=40)
    assert qm.fidelity["samples"] == 40 and qm.fidelity["verdict"] in ("good", "poor")
    assert isinstance(qm.fidelity["passed"], bool) and not any("needs 32" in w for w in warned)


def test_probability_outputs_get_decision_metrics_not_top1():
    torch.manual_seed(0)
    model = FrameProbabilities().eval()
    g = torch.Generator().manual_seed(2)
    qm, _ = _quantize(model, [torch.randn(16, 8, 40, generator=g) for _ in range(8)])  # 128: 32 held back
    c = qm.fidelity
    assert c["output"] == "probabilities" and c["top1_agreement"] is None and c["kl"] is None
    assert c["compared"] == c["samples"] * 40 and 0.5 < c["decision_agreement"] <= 1.0
    assert c["mean_abs_error"] is not None and c["verdict"] in ("good", "poor")
