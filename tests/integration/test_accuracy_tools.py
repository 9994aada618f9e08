"""ptsq analyze ranks a deliberately broken layer first; the budget loop meets a budget plain PTQ misses."""

from __future__ import annotations

import pytest
import torch

import ptsq
from ptsq.analysis.budget import quantize_with_budget
from ptsq.analysis.sensitivity import analyze, float_layers
from ptsq.config import Pt2eOptions, QuantConfig
from ptsq.errors import ConfigError
from ptsq.modes.check import rank_culprits
from tests.models import SmallNet, randomize_bn


def broken_small_net() -> SmallNet:
    """SmallNet whose features.3 holds a huge weight on an input channel that is always zero.

    fp32 is unaffected (the channel is dead after ReLU), but per-channel int8 weights of features.3
    get a scale ~8, which rounds every ordinary weight of that layer to zero.
    """
    torch.manual_seed(0)
    m = randomize_bn(SmallNet())
    with torch.no_grad():
        m.features[1].bias[3] = -100.0
        m.features[3].weight[:, 3] = 1000.0
    return m.eval()


def _batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 3, 32, 32, generator=g) for _ in range(n)]


CFG = QuantConfig(speed_guard=0, cleanup=("conv-modules", "fold-pad", "fold-bn", "clamp-ranges"))
# PT2E puts layers back to fp32 in its converted aten graph; the fast tier runs that graph uncompiled
ENGINES = [
    pytest.param(CFG.replace(engine="fx"), id="fx", marks=pytest.mark.torch_ao),
    pytest.param(CFG.replace(engine="pt2e", pt2e=Pt2eOptions(compile=False)), id="pt2e"),
]


@pytest.mark.parametrize("cfg", ENGINES)
def test_analyze_ranks_the_broken_layer_first(cfg):
    report = analyze(broken_small_net(), _batches(4), config=cfg)
    assert report.layers[0].name == "features.3"
    assert report.layers[0].gain_db > 10 and report.layers[0].layer_sqnr_db < 10
    assert report.keep_fp32 == ["features.3"]
    assert report.keep_fp32_sqnr_db is not None and report.keep_fp32_sqnr_db > report.baseline_sqnr_db + 10
    assert report.skip_options() == "--skip name:features.3"
    assert report.to_dict()["layers"][0]["name"] == "features.3"


@pytest.mark.parametrize("cfg", ENGINES)
def test_budget_loop_meets_a_budget_plain_ptq_misses(cfg):
    model = broken_small_net()
    calib, held = _batches(4), _batches(2, seed=1)
    plain = ptsq.quantize(model, calib, config=cfg, progress=False)
    # what a poor self-check names as likely culprits (PT2E taps its own graphs: no modules to hook)
    names = [r.name for r in plain.result.precision if r.precision == "int8"]
    fp32_out, int8_out = float_layers(plain.result).layer_outputs(names, (held[0],))
    assert rank_culprits(names, fp32_out, int8_out)[0][0] == "features.3"
    with torch.no_grad():
        from ptsq.fidelity import sqnr_db

        plain_sqnr = sqnr_db(torch.cat([model(x) for x in held]), torch.cat([plain.module(x) for x in held]))
    assert plain_sqnr < 25
    res = quantize_with_budget(model, calib, eval_data=held, min_sqnr=30.0, config=cfg, latency_runs=3)
    assert res.met and res.fp32_layers == ["features.3"]
    final = res.steps[-1]
    assert final.kind == "int8" and final.metrics["sqnr_db"] >= 30 and final.latency_ms is not None
    assert res.model.precision["features.3"]["precision"] == "fp32"
    assert "skip rule 'name:features.3'" in res.model.precision["features.3"]["reason"]


@pytest.mark.parametrize("cfg", ENGINES)
def test_budget_with_labels_reports_drop_and_needs_labels(cfg):
    model = broken_small_net()
    x = _batches(2, seed=2)
    with torch.no_grad():
        labelled = [(b, model(b).argmax(1)) for b in x]  # labels = fp32 predictions: fp32 top-1 is 1.0
    # 16 samples, one a near-tie in fp32 (logits 0.1002 vs 0.0996) that any int8 noise may flip: allow it
    res = quantize_with_budget(model, _batches(3), eval_data=labelled, max_drop=10.0, config=cfg, latency_runs=0)
    assert res.steps[0].metrics["fp32_top1"] == 1.0 and res.steps[0].metrics["drop_pp"] > 50
    assert res.met and res.steps[-1].metrics["drop_pp"] <= 10.0 and "features.3" in res.fp32_layers
    with pytest.raises(ConfigError, match="labelled"):
        quantize_with_budget(model, _batches(3), max_drop=1.0, config=cfg)
    with pytest.raises(ConfigError, match="no accuracy budget"):
        quantize_with_budget(model, _batches(3), config=cfg)


def test_margin_deficit_gives_the_budget_a_direction_where_agreement_is_flat():
    from ptsq.analysis.budget import Budget, margin_deficit

    ref = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert margin_deficit(ref, ref) == 0.0
    near = torch.tensor([[1.0, 1.2, 0.0], [0.0, 3.0, 1.0]])  # sample 0 lost by 0.2
    far = torch.tensor([[1.0, 2.0, 0.0], [0.0, 3.0, 1.0]])  # sample 0 lost by 1.0
    assert margin_deficit(ref, near) == pytest.approx(0.1) and margin_deficit(ref, far) == pytest.approx(0.5)
    # exact ties (quantized logits): argmax takes the first class; a tie it resolves against fp32 is a miss
    ref2 = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0]])
    assert margin_deficit(ref2, torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 3.0]])) == 0.0
    assert margin_deficit(ref2, torch.tensor([[1.0, 1.0, 0.0], [0.0, 3.0, 3.0]])) > 0.0
    budget = Budget(min_agreement=1.0)
    worse = {"agreement": 0.5, "margin_deficit": 0.5, "sqnr_db": 20.0}
    closer = {"agreement": 0.5, "margin_deficit": 0.1, "sqnr_db": 10.0}
    assert budget.score(closer) > budget.score(worse)  # same agreement: the smaller deficit wins over SQNR
    assert Budget(min_sqnr=15.0).score(worse) > Budget(min_sqnr=15.0).score(closer)
