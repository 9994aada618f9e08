"""Real architectures (random weights, no downloads) through the FX engine with no edits. Slow tier;
the whole zoo is `make coverage` (benchmarks/bench_coverage.py)."""

from __future__ import annotations

import pytest
import torch

import ptsq
from ptsq.config import QuantConfig

pytestmark = pytest.mark.slow
EXACT = QuantConfig(speed_guard=0)


def _int8(qm, prefix: str) -> list[str]:
    return [n for n, p in qm.precision.items() if n.startswith(prefix) and p["precision"] == "int8"]


def test_detection_model_backbone_int8_post_processing_fp32():
    tvm = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    model = tvm.get_model(
        "fasterrcnn_mobilenet_v3_large_320_fpn", weights=None, weights_backbone=None, min_size=128, max_size=128
    ).eval()
    calib = [([torch.rand(3, 128, 128) for _ in range(2)],) for _ in range(3)]
    qm = ptsq.quantize(model, calib, config=EXACT, progress=False)
    top = qm.precision["(top level)"]
    assert top["precision"] == "fp32" and "cannot be traced" in top["reason"]
    assert _int8(qm, "backbone.")  # the feature extractor runs int8
    out = qm([torch.rand(3, 128, 128)])
    assert isinstance(out, list) and set(out[0]) == {"boxes", "labels", "scores"}


def test_segmentation_dict_output_survives_the_artifact(tmp_path):
    tvm = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    model = tvm.get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None).eval()
    calib = [torch.randn(2, 3, 64, 64) for _ in range(3)]
    qm = ptsq.quantize(model, calib, config=EXACT, progress=False)
    art = ptsq.load(qm.save(tmp_path / "seg.pt"))
    x = calib[0][:1]
    ref, got = model(x), art(x)
    assert isinstance(got, dict) and set(got) == set(ref) and got["out"].shape == ref["out"].shape


@pytest.mark.parametrize("name", ["mobilevit_xxs", "convnext_atto"])
def test_timm_architectures(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    calib = [torch.randn(2, 3, 64, 64) for _ in range(3)]
    qm = ptsq.quantize(model, calib, config=EXACT, progress=False)
    assert qm.summary()["layers"]["int8"] > 0
    assert qm(calib[0]).shape == model(calib[0]).shape
