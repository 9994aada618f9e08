"""``ptsq info``'s reader gives, for an artifact of every engine, exactly the manifest ``ptsq.load`` verifies."""

from __future__ import annotations

import pytest
import torch

import ptsq
from ptsq.engines import missing_packages
from ptsq.manifest_file import artifact_format, read_manifest
from tests.models import SmallNet, randomize_bn

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("engine,suffix", [("fx", ".pt"), ("pt2e", ".pt2"), ("onnx", ".onnx"),
                                           ("openvino", ".ov"), ("auto", ".bin")])  # fmt: skip
def test_reader_matches_load(engine, suffix, tmp_path):
    if engine != "auto" and missing_packages(engine):
        pytest.skip(f"{engine} needs {missing_packages(engine)}")
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(4, 3, 32, 32, generator=g) for _ in range(4)]
    qm = ptsq.quantize(randomize_bn(SmallNet()), calib, config=ptsq.QuantConfig(engine=engine, speed_guard=0),
                       progress=False)  # fmt: skip
    path = qm.save(tmp_path / f"small{suffix}")
    loaded = ptsq.load(path)
    assert read_manifest(path) == loaded.manifest
    assert artifact_format(path) == loaded.manifest["engine"]  # auto: the format of the engine it kept
