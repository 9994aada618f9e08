"""ptsq eval through the CLI: labelled (class folders, file-name pattern), fidelity only, and bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.cli.conftest import assert_clean_error, run_cli, spec, tree_digest
from tests.colour_data import class_folders, flat_labelled

PRE = ("--preset", "unit", "--input-size", "16")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval")
    folders = class_folders(root / "folders")
    flat = flat_labelled(root / "flat")
    out = {"folders": folders, "flat": flat}
    for size in (16, 24):
        art = root / f"colour{size}.pt"
        res = run_cli("quantize", spec("ColourNet"), "--calib", folders, "-o", art, "--preset", "unit",
                      "--input-size", str(size), "--speed-guard", "0", "--num-calib", "12", "--allow-slower",
                      "--quiet")  # fmt: skip
        assert res.code == 0, res.stderr
        out[f"art{size}"] = art
    return out


def _json(*args: object) -> dict:
    res = run_cli("eval", *args, "--json")
    assert res.code == 0, res.stderr
    return json.loads(res.stdout)


def test_class_folders_top1(data):
    before = tree_digest(data["folders"])
    d = _json(spec("ColourNet"), "--data", data["folders"], *PRE, "--batch-size", "5")
    assert d["data"]["labels"] == "folders" and d["data"]["classes"] == 3 and d["data"]["images"] == 12
    (m,) = d["models"]
    assert m["top1"] == 1.0 and m["top5"] == 1.0 and m["fidelity"] is None
    assert tree_digest(data["folders"]) == before  # inputs never modified


def test_pattern_labels_fp32_vs_artifact(data):
    d = _json(spec("ColourNet"), data["art16"], "--data", data["flat"], "--label-pattern", r"photo_\d+_(\d+)\.png")
    assert d["data"]["labels"] == "pattern" and d["data"]["images"] == 12
    # no preprocessing options: the artifact's manifest decides, for both models
    assert d["preprocess"]["size"] == [16, 16] and d["preprocess"]["preset"] == "unit"
    fp32, int8 = d["models"]
    assert fp32["kind"] == "fp32" and int8["kind"].startswith("int8")
    assert fp32["top1"] == 1.0 and int8["top1"] == 1.0
    assert int8["fidelity"]["top1_agreement"] == 1.0


def test_unlabelled_fidelity_fields(data):
    d = _json(spec("ColourNet"), data["art16"], "--data", data["flat"], "--max-images", "9")
    assert d["data"]["labels"] == "none" and d["data"]["images"] == 9
    assert d["models"][0]["top1"] is None
    f = d["models"][1]["fidelity"]
    assert set(f) >= {"samples", "top1_agreement", "top5_overlap", "kl", "sqnr_db", "cosine"}
    assert f["samples"] == 9 and f["top1_agreement"] == 1.0 and f["top5_overlap"] == 1.0
    assert f["sqnr_db"] > 25 and f["cosine"] > 0.99 and 0 <= f["kl"] < 1e-3 and math.isfinite(f["sqnr_db"])


def test_human_table(data):
    res = run_cli("eval", spec("ColourNet"), data["art16"], "--data", data["folders"])
    assert res.code == 0, res.stderr
    assert "top-1" in res.stdout and "SQNR" in res.stdout and "colour16.pt" in res.stdout


def test_labels_cannot_be_determined(data):
    res = run_cli("eval", spec("ColourNet"), "--data", data["flat"], *PRE)
    assert_clean_error(res, "labels cannot be determined")
    res = run_cli("eval", spec("ColourNet"), "--data", data["flat"], *PRE, "--label-pattern", r"nope_(\d+)")
    assert_clean_error(res, "labels cannot be determined")
    res = run_cli("eval", spec("ColourNet"), "--data", data["flat"], *PRE, "--labels", "folders")
    assert_clean_error(res, "labels cannot be determined")


def test_class_count_mismatch(data):
    res = run_cli("eval", spec("SmallNet"), "--data", data["folders"], "--preset", "unit", "--input-size", "32")
    assert_clean_error(res, "3 class folders", "10 outputs")


def test_artifacts_for_different_input_sizes(data):
    res = run_cli("eval", data["art16"], data["art24"], "--data", data["folders"])
    assert_clean_error(res, "different input sizes")


def test_missing_data_folder(data, tmp_path):
    assert_clean_error(run_cli("eval", spec("ColourNet"), "--data", tmp_path / "nope", *PRE), "does not exist")
