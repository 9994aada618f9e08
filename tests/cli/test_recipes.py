"""Recipe files on the command line: --config, --save-config, flags that override, info --recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import ptsq
from tests.cli.conftest import assert_clean_error, run_cli, spec

SEQ = Path(__file__).resolve().parents[1] / "models_seq.py"
COMMON = ["--preset", "imagenet", "--input-size", "32", "--num-calib", "8", "--batch-size", "4"]


@pytest.mark.torch_ao  # checks the fx engine's dynamic module swap
def test_mode_dynamic_in_a_recipe_runs_dynamic_mode(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("mode: dynamic\ndynamic:\n  min_cosine: 0.95\n")
    out = tmp_path / "m.pt"
    res = run_cli("quantize", f"{SEQ}:TokenMLP", "--config", recipe, "-o", out, "--json")
    assert res.code == 0, res.stderr
    m = ptsq.load(out).manifest
    assert m["mode"] == "dynamic" and m["config"]["dynamic"]["min_cosine"] == 0.95
    assert m["details"]["capture"].startswith("eager module swap")


def _ptsq(*args: object) -> subprocess.CompletedProcess[str]:
    """A fresh process per run: within one process TorchScript numbers its classes, so bytes would differ."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    cmd = [sys.executable, "-m", "ptsq.cli.main", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_save_config_then_config_gives_a_byte_identical_artifact(
    tmp_path: Path, photo_dir: Path, small_weights: Path
) -> None:
    first, second, recipe = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "recipe.yaml"
    flags = [
        "--speed-guard",
        "0",
        "--no-speed-check",  # its measured times would make the two artifacts differ
        "--observer",
        "minmax",
        "--no-cleanup",
        "equalize",
        "--skip",
        "name:fc",
        "--seed",
        "3",
    ]
    res = _ptsq("quantize", spec("SmallNet"), "-w", small_weights, "--calib", photo_dir, *COMMON, *flags, "-o", first,
                "--save-config", recipe, "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    saved = yaml.safe_load(recipe.read_text())
    assert saved["fx"]["observer"] == "minmax" and "equalize" not in saved["cleanup"] and saved["skip"] == ["name:fc"]
    res = _ptsq("quantize", spec("SmallNet"), "-w", small_weights, "--calib", photo_dir, "--preset", "imagenet",
                "--input-size", "32", "--config", recipe, "-o", second, "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert first.read_bytes() == second.read_bytes()
    res = run_cli("info", first, "--recipe")
    assert res.code == 0 and yaml.safe_load(res.stdout) == saved


def test_a_flag_overrides_the_recipe_even_at_its_default(tmp_path: Path, photo_dir: Path, small_weights: Path) -> None:
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"speed_guard": 0, "per_channel": False, "seed": 5, "fx": {"observer": "minmax"}}))
    out = tmp_path / "o.pt"
    res = run_cli("quantize", spec("SmallNet"), "-w", small_weights, "--calib", photo_dir, *COMMON, "--config", recipe,
                  "--seed", "0", "--observer", "histogram", "-o", out)  # fmt: skip
    assert res.code == 0, res.stderr
    cfg = ptsq.load(out).manifest["config"]
    assert (cfg["seed"], cfg["fx"]["observer"], cfg["per_channel"], cfg["speed_guard"]) == (0, "histogram", False, 0)


def test_a_misspelt_recipe_key_is_one_line_naming_the_closest(tmp_path: Path, photo_dir: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("onnx:\n  calibraton: entropy\n")
    out = tmp_path / "o.pt"
    res = run_cli("quantize", spec("SmallNet"), "--calib", photo_dir, *COMMON, "--config", recipe, "-o", out)
    assert_clean_error(res, "onnx.calibraton")
    assert "calibration" in res.stderr and not out.exists()
