"""ptsq analyze, and the accuracy options of ptsq quantize (--observer, --no-cleanup, --config, budgets)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.cli.conftest import assert_clean_error, run_cli, spec
from tests.integration.test_accuracy_tools import broken_small_net

COMMON = ("--preset", "imagenet", "--input-size", "32", "--num-calib", "16", "--batch-size", "4", "--speed-guard", "0")
NO_CLE = ("--cleanup", "conv-modules,fold-pad,fold-bn,clamp-ranges")  # CLE would half-repair the broken layer


def _broken_weights(tmp_path):
    p = tmp_path / "broken.pth"
    torch.save(broken_small_net().state_dict(), p)
    return p


def test_analyze_names_the_broken_layer_and_the_skip_option(photo_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PTSQ_PT2E_EAGER", "1")  # without torch.ao the default engine is PT2E: no inductor here
    plot = tmp_path / "layers.png"
    res = run_cli("analyze", spec("SmallNet"), "--weights", _broken_weights(tmp_path), "--calib", photo_dir,
                  *COMMON, *NO_CLE, "--plot", plot, "--json")  # fmt: skip
    assert res.code == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["layers"][0]["name"] == "features.3" and d["keep_fp32"] == ["features.3"]
    assert "--skip name:features.3" in d["command"] and d["command"].startswith("ptsq quantize ")
    # the recommended command keeps every option the analysis ran with
    assert "--input-size 32 " in d["command"] and "--num-calib 16 --batch-size 4" in d["command"]
    assert "--speed-guard 0" in d["command"] and f"--cleanup {NO_CLE[1]}" in d["command"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    human = run_cli(
        "analyze", spec("SmallNet"), "--weights", _broken_weights(tmp_path), "--calib", photo_dir, *COMMON, *NO_CLE
    )
    assert human.code == 0 and "--skip name:features.3" in human.stdout


@pytest.mark.slow  # the library loop is covered in the fast tier by tests/integration/test_accuracy_tools.py
def test_quantize_budget_keeps_the_broken_layer_fp32(photo_dir, tmp_path):
    out = tmp_path / "b.pt"
    res = run_cli("quantize", spec("SmallNet"), "--weights", _broken_weights(tmp_path), "--calib", photo_dir,
                  "-o", out, *COMMON, *NO_CLE, "--min-sqnr", "30", "--json")  # fmt: skip
    assert res.code == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["budget"]["met"] and d["budget"]["fp32_layers"] == ["features.3"]
    assert d["budget"]["steps"][-1]["kind"] == "int8" and d["budget"]["steps"][-1]["latency_ms"] > 0
    assert out.is_file()


def test_quantize_observer_cleanup_and_config_file(photo_dir, small_weights, tmp_path):
    cfg = tmp_path / "q.json"
    cfg.write_text(json.dumps({"type": "QuantConfig", "version": 1, "observer": "percentile", "skip": ["name:fc"]}))
    out = tmp_path / "o.pt"
    res = run_cli("quantize", spec("SmallNet"), "--weights", small_weights, "--calib", photo_dir, "-o", out,
                  *COMMON, "--config", cfg, "--no-cleanup", "equalize", "--json")  # fmt: skip
    assert res.code == 0, res.stderr
    config = json.loads(run_cli("info", out, "--json").stdout)["config"]
    assert config["fx"]["observer"] == "percentile" and config["skip"] == ["name:fc"]
    assert "equalize" not in config["cleanup"] and "fold-bn" in config["cleanup"]
    assert config["speed_guard"] == 0  # a command-line option wins over the recipe


def test_bad_accuracy_options_are_clean_errors(photo_dir, small_weights, tmp_path):
    base = ("quantize", spec("SmallNet"), "--weights", small_weights, "--calib", photo_dir, "-o", tmp_path / "x.pt",
            "--preset", "imagenet", "--input-size", "32")  # fmt: skip
    assert_clean_error(run_cli(*base, "--observer", "kl"), "observer 'kl'")
    assert_clean_error(run_cli(*base, "--no-cleanup", "fold-everything"), "clean-up step")
    assert_clean_error(run_cli(*base, "--max-drop", "1"), "labelled")
    assert_clean_error(run_cli(*base, "--config", tmp_path / "missing.json"), "--config")
    res = run_cli(*base, "--skip", "name:nothing_here")  # found after the model loads: other lines may precede
    assert res.code == 2 and "error: skip rule 'name:nothing_here' matches no layer" in res.stderr
