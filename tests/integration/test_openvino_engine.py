"""The openvino engine (OpenVINO IR quantized by NNCF) end to end: quantize, save, reload here and in a
fresh process, precision map, skip rules, option errors."""

from __future__ import annotations

import zipfile

import pytest
import torch
from torch import nn

import ptsq
from ptsq.config import QuantConfig
from ptsq.errors import ConfigError
from ptsq.fidelity import sqnr_db
from tests.integration.test_engines import _batches, _load_in_fresh_process
from tests.models import SmallNet, randomize_bn

pytest.importorskip("openvino", reason="the openvino engine needs openvino (pip install 'ptsq[engines]')")
pytest.importorskip("nncf", reason="the openvino engine needs nncf (pip install 'ptsq[engines]')")


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return randomize_bn(SmallNet()).eval(), _batches((8, 3, 32, 32), n=16)  # 32 held back: a verdict


def test_openvino_quantizes_saves_and_reloads_in_a_fresh_process(small, tmp_path):
    model, calib = small
    qm = ptsq.quantize(model, calib, config=QuantConfig(engine="openvino", speed_guard=0), progress=False)
    assert qm.summary()["engine"] == "openvino"
    # the folded conv+BN layers are named after their torch convs, and run in int8 on the CPU plugin
    int8 = {n for n, p in qm.precision.items() if p["precision"] == "int8"}
    assert {"features.0", "features.3", "features.6", "fc"} <= int8, qm.precision
    assert qm.manifest["details"]["preset"] == "performance"

    x = calib[-1]  # held back from calibration
    with torch.inference_mode():
        ref, got = model(x), qm(x)
    assert qm.fidelity["passed"] and sqnr_db(ref, got) > 15.0, sqnr_db(ref, got)

    path = qm.save(tmp_path / "small.ov")
    with zipfile.ZipFile(path) as zf:  # one file: IR + manifest
        assert {"ptsq_openvino/model.xml", "ptsq_openvino/model.bin"} <= set(zf.namelist())
    art = ptsq.load(path)
    assert art.manifest["engine"] == "openvino" and art.manifest["precision"] == qm.manifest["precision"]
    torch.testing.assert_close(art(x), got, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_load_in_fresh_process(path, x, tmp_path), got, atol=1e-5, rtol=1e-5)


def test_openvino_skip_rule_keeps_the_conv_fp32_and_options_are_checked(small):
    model, calib = small
    cfg = QuantConfig(engine="openvino", speed_guard=0, skip=("name:features.3",), openvino={"preset": "mixed"})
    qm = ptsq.quantize(model, calib, config=cfg, progress=False)
    assert qm.precision["features.3"]["precision"] == "fp32"
    assert "skip rule" in qm.precision["features.3"]["reason"]
    assert qm.precision["features.0"]["precision"] == "int8"
    assert qm.manifest["details"]["preset"] == "mixed"
    with pytest.raises(ConfigError, match=r"openvino\.preset"):
        ptsq.quantize(model, calib, config=QuantConfig(engine="openvino", openvino={"preset": "fast"}))


class DepthwiseNet(nn.Module):
    """stem conv -> depthwise conv -> grouped (not depthwise) conv -> pointwise conv -> fc, BN + ReLU6 between."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int, k: int, groups: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()
            )

        self.stem = block(3, 16, 3, 1)
        self.dw = block(16, 16, 3, 16)
        self.grouped = block(16, 16, 3, 4)
        self.pw = block(16, 32, 1, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw(self.grouped(self.dw(self.stem(x))))
        return self.fc(x.mean((2, 3)))


def test_openvino_keeps_depthwise_convs_fp32_unless_told():
    torch.manual_seed(0)
    model, calib = randomize_bn(DepthwiseNet()).eval(), _batches((8, 3, 32, 32))
    qm = ptsq.quantize(model, calib, config=QuantConfig(engine="openvino", speed_guard=0), progress=False)
    assert qm.manifest["details"]["depthwise"] == "fp32"
    dw = qm.precision["dw.0"]
    assert dw["precision"] == "fp32" and "openvino.depthwise" in dw["reason"], qm.precision
    assert qm.precision["stem.0"]["precision"] == "int8" and qm.precision["pw.0"]["precision"] == "int8"
    assert "depthwise" not in qm.precision["grouped.0"].get("reason", ""), qm.precision  # groups of 4 channels
    assert any(n.startswith("1 depthwise conv") for n in qm.manifest["notes"]), qm.manifest["notes"]

    cfg = QuantConfig(engine="openvino", speed_guard=0, openvino={"depthwise": "int8"})
    qm8 = ptsq.quantize(model, calib, config=cfg, progress=False)
    assert qm8.manifest["details"]["depthwise"] == "int8"
    assert qm8.precision["dw.0"]["precision"] == "int8", qm8.precision
    with pytest.raises(ConfigError, match=r"openvino\.depthwise"):
        ptsq.quantize(model, calib, config=QuantConfig(engine="openvino", openvino={"depthwise": "fp16"}))
