"""ptsq quantize --engine pt2e|onnx|auto, and info/bench on every artifact kind, through the CLI."""

from __future__ import annotations

import json

import pytest
import torch

import ptsq
from ptsq.config import QuantConfig
from tests.cli.conftest import assert_clean_error, run_cli, spec
from tests.models import FaceNet, SmallNet, randomize_bn

COMMON = ("--preset", "imagenet", "--input-size", "32", "--num-calib", "16", "--batch-size", "4", "--speed-guard", "0")


def _quantize(engine: str, model: str, weights, photo_dir, out, *extra: str):
    res = run_cli("quantize", spec(model), "--weights", weights, "--calib", photo_dir, "-o", out,
                  "--engine", engine, *COMMON, *extra)  # fmt: skip
    assert res.code == 0, res.stderr
    return res


def test_onnx_engine_quantize_info_bench(photo_dir, small_weights, tmp_path):
    out = tmp_path / "small.onnx"
    data = json.loads(_quantize("onnx", "SmallNet", small_weights, photo_dir, out, "--json").stdout)
    assert data["engine"] == "onnx" and data["layers"]["int8"] >= 4
    # 16 images: 8 held back, too few for a verdict; the figures are still there
    assert data["check"]["sqnr_db"] > 20.0 and data["check"]["passed"] is None
    assert data["int8_bytes"] == out.stat().st_size

    info = json.loads(run_cli("info", out, "--json").stdout)
    assert info["engine"] == "onnx" and info["details"]["activations"] == "uint8"
    assert info["input"]["shapes"] == [[1, 3, 32, 32]]

    res = run_cli("bench", spec("SmallNet"), out, "--runs", "3", "--warmup", "1", "--json")
    assert res.code == 0, res.stderr
    kinds = [t["kind"] for t in json.loads(res.stdout)["timings"]]
    assert kinds == ["fp32", "int8 (onnx)"]


def test_prelu_model_through_cli_with_onnx(photo_dir, tmp_path):
    w = tmp_path / "face.pth"
    torch.save(randomize_bn(FaceNet()).state_dict(), w)
    out = tmp_path / "face.onnx"
    data = json.loads(_quantize("onnx", "FaceNet", w, photo_dir, out, "--allow-slower", "--json").stdout)
    assert data["check"]["sqnr_db"] > 20.0
    assert {r["op"] for r in data["fp32_layers"]} >= {"PRelu"}


def test_info_reads_a_pt2e_artifact_without_compiling(tmp_path):
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(4, 3, 32, 32, generator=g) for _ in range(4)]
    qm = ptsq.quantize(
        randomize_bn(SmallNet()), calib, config=QuantConfig(engine="pt2e", pt2e={"compile": False}),
        progress=False,
    )  # fmt: skip
    out = qm.save(tmp_path / "small.pt2")
    res = run_cli("info", out)
    assert res.code == 0, res.stderr
    assert "pt2e" in res.stdout and "Conv2d" in res.stdout


def test_unknown_engine_lists_the_engines(photo_dir, small_weights, tmp_path):
    res = run_cli("quantize", spec("SmallNet"), "--weights", small_weights, "--calib", photo_dir,
                  "-o", tmp_path / "x.pt", "--engine", "tensorrt", "--quiet", *COMMON)  # fmt: skip
    assert_clean_error(res, "engine 'tensorrt' is unknown")
    assert "pt2e" in res.stderr and "onnx" in res.stderr
    assert not (tmp_path / "x.pt").exists()


def test_export_failure_suggests_fx(photo_dir, tmp_path):
    res = run_cli("quantize", spec("RootUntraceable"), "--calib", photo_dir, "-o", tmp_path / "x.pt2",
                  "--engine", "pt2e", "--quiet", *COMMON)  # fmt: skip
    assert_clean_error(res, "torch.export cannot capture", "tests/models.py:116")
    from ptsq import legacy

    assert ("--engine fx" if legacy.available() else "torch.cond") in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("model", ["SmallNet", "FaceNet"])
def test_pt2e_engine_quantize_info_bench(model, photo_dir, tmp_path):
    w = tmp_path / "w.pth"
    torch.save(randomize_bn(SmallNet() if model == "SmallNet" else FaceNet()).state_dict(), w)
    out = tmp_path / "m.pt2"
    data = json.loads(_quantize("pt2e", model, w, photo_dir, out, "--json").stdout)
    # the test folder holds fewer images than a verdict needs: figures without GOOD/POOR, never POOR
    assert data["engine"] == "pt2e" and data["check"]["passed"] is not False, data["check"]
    assert data["check"]["sqnr_db"] > 20.0 and data["compile_seconds"] > 0  # reported, not in the manifest
    info = json.loads(run_cli("info", out, "--json").stdout)
    assert "compile_seconds" not in info["details"]
    res = run_cli("bench", spec(model), out, "--runs", "3", "--warmup", "1", "--json")
    assert res.code == 0, res.stderr
    assert [t["kind"] for t in json.loads(res.stdout)["timings"]] == ["fp32", "int8 (pt2e)"]


@pytest.mark.slow
def test_auto_prints_the_comparison_table(photo_dir, small_weights, tmp_path):
    out = tmp_path / "small.bin"
    res = _quantize("auto", "SmallNet", small_weights, photo_dir, out)
    assert "--engine auto" in res.stdout and "chosen" in res.stdout
    for engine in ("fx", "pt2e", "onnx"):
        assert engine in res.stdout
    info = json.loads(run_cli("info", out, "--json").stdout)
    assert info["engine"] == info["auto"]["chosen"]
