"""Whole models quantized with each range-setting observer and with bias correction (ptsq/algorithms)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import ptsq
from ptsq.algorithms import OBSERVER_NAMES
from ptsq.config import QuantConfig
from tests.models import SmallNet, randomize_bn


def _calib(n: int = 5, shape: tuple[int, ...] = (8, 3, 32, 32)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


# entropy's KL search is slow end to end (~10 s here); its range rule is tested directly below
@pytest.mark.parametrize(
    "observer", [pytest.param(o, marks=pytest.mark.slow) if o == "entropy" else o for o in OBSERVER_NAMES]
)
def test_every_observer_runs_and_gives_a_sane_sqnr(observer):
    model = randomize_bn(SmallNet())
    qm = ptsq.quantize(model, _calib(), config=QuantConfig(fx={"observer": observer}, speed_guard=0), progress=False)
    assert qm.manifest["config"]["fx"]["observer"] == observer
    assert qm.fidelity["sqnr_db"] > 20.0, qm.fidelity


def test_bias_correction_does_not_hurt_and_reports():
    model = randomize_bn(SmallNet())
    calib = _calib(6)
    steps = ("conv-modules", "fold-pad", "fold-bn", "clamp-ranges")
    cfg = QuantConfig(fx={"observer": "minmax"}, per_channel=False, speed_guard=0, cleanup=steps)
    plain = ptsq.quantize(model, calib, config=cfg, progress=False)
    corrected = ptsq.quantize(model, calib, config=replace(cfg, cleanup=(*steps, "bias-correction")), progress=False)
    assert any("bias correction" in n for n in corrected.manifest["notes"])
    assert corrected.fidelity["sqnr_db"] >= plain.fidelity["sqnr_db"] - 0.5, (plain.fidelity, corrected.fidelity)
