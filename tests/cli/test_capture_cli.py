"""CLI: untraceable blocks are reported (layer, op, first line of the failure); --strict fails; per-input bench."""

from __future__ import annotations

import json

import pytest
import torch

import ptsq
from ptsq.config import QuantConfig
from tests.cli.conftest import assert_clean_error, run_cli, spec
from tests.models import TwoInOut


@pytest.mark.torch_ao  # FX keeps untraceable submodules fp32
def test_untraceable_block_is_reported_and_strict_fails(tmp_path, photo_dir):
    out = tmp_path / "o.pt"
    res = run_cli("quantize", spec("sandwich_assert"), "--calib", photo_dir, "-o", out, "--preset", "imagenet",
                  "--input-size", "16", "--num-calib", "4", "--speed-guard", "0", "--allow-slower",
                  "--json")  # fmt: skip
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)
    fp32 = {r["name"]: r for r in data["fp32_layers"]}
    assert "block" in fp32 and "assert bool" in fp32["block"]["reason"] and "models.py" in fp32["block"]["reason"]
    assert data["layers"]["int8"] >= 3
    assert any("assert bool" in n for n in data["notes"])
    res = run_cli("quantize", spec("sandwich_assert"), "--calib", photo_dir, "-o", tmp_path / "s.pt",
                  "--preset", "imagenet", "--input-size", "16", "--num-calib", "4", "--strict", "--quiet")  # fmt: skip
    assert_clean_error(res, "block", "assert bool")
    assert not (tmp_path / "s.pt").exists()


def test_bench_takes_every_input_of_a_multi_input_artifact(tmp_path):
    torch.manual_seed(0)
    calib = [(torch.randn(2, 3, 12, 12), torch.randn(2, 3, 6, 8)) for _ in range(3)]
    path = ptsq.quantize(TwoInOut().eval(), calib, config=QuantConfig(speed_guard=0), progress=False).save(
        tmp_path / "two.pt"
    )
    res = run_cli("bench", path, "--runs", "2", "--warmup", "1", "--no-memory", "--json")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["input_shapes"] == [[1, 3, 12, 12], [1, 3, 6, 8]]
    res = run_cli("bench", path, "--runs", "2", "--warmup", "1", "--no-memory", "--json",
                  "--input-size", "3x16x16,3x8x8")  # fmt: skip
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["input_shapes"] == [[1, 3, 16, 16], [1, 3, 8, 8]]
