"""ptsq bench through the CLI: every JSON field (peak memory, machine), --plot, bad inputs. No timing asserts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptsq import legacy
from tests.cli.conftest import assert_clean_error, run_cli, spec
from tests.colour_data import class_folders


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    out = root / "colour.pt"
    imgs = class_folders(root / "imgs")
    res = run_cli("quantize", spec("ColourNet"), "--calib", imgs, "-o", out, "--preset", "unit", "--input-size", "16",
                  "--speed-guard", "0", "--num-calib", "12", "--allow-slower", "--quiet")  # fmt: skip
    assert res.code == 0, res.stderr
    return out


def test_json_has_every_field(art):
    res = run_cli("bench", spec("ColourNet"), art, "--threads", "1,2", "--batch-size", "1,3", "--runs", "3",
                  "--warmup", "1", "--json")  # fmt: skip
    assert res.code == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["input_shape"] == [1, 3, 16, 16]  # from the artifact's manifest
    m = d["machine"]
    assert {"cpu", "isa", "cores", "torch", "quantized_engine"} <= set(m) and m["cores"] >= 1
    assert isinstance(m["isa"], list) and m["cpu"]
    t = d["timings"]
    assert len(t) == 2 * 2 * 2  # models x threads x batch sizes
    assert {(r["threads"], r["batch_size"]) for r in t} == {(1, 1), (1, 3), (2, 1), (2, 3)}
    fields = {"label", "kind", "threads", "batch_size", "median_ms", "p90_ms", "mean_ms", "min_ms", "samples_per_s",
              "speedup", "size_bytes", "runs", "peak_rss_mb", "model_mb"}  # fmt: skip
    for r in t:
        assert fields <= set(r), fields - set(r)
        assert r["min_ms"] <= r["median_ms"] <= r["p90_ms"] and r["runs"] == 3
        assert r["samples_per_s"] == pytest.approx(r["batch_size"] * 1000 / r["median_ms"], rel=1e-2)
    assert all(r["speedup"] == 1.0 for r in t if r["kind"] == "fp32")
    assert next(r["size_bytes"] for r in t if r["kind"] != "fp32") == art.stat().st_size
    mem = d["memory"]
    assert [x["label"] for x in mem] == [spec("ColourNet"), "colour.pt"]
    for x in mem:
        assert x.get("error") is None, x
        assert x["peak_rss_mb"] > 10 and x["model_mb"] >= 0 and x["batch_size"] == 3
    # each row is its own measurement (before: one process-wide peak, set by import torch, for every row)
    assert all(r["peak_rss_mb"] > r["model_mb"] >= 0 for r in t)
    assert len({r["peak_rss_mb"] for r in t}) > 1, [r["peak_rss_mb"] for r in t]


def test_plot_writes_png(art, tmp_path):
    png = tmp_path / "lat.png"
    res = run_cli("bench", spec("ColourNet"), art, "--threads", "1,2", "--runs", "2", "--warmup", "0",
                  "--no-memory", "--plot", png, "--json")  # fmt: skip
    assert res.code == 0, res.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    assert json.loads(res.stdout)["plot"] == str(png)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # written atomically


def test_plot_folder_missing_fails_before_timing(art, tmp_path):
    res = run_cli("bench", art, "--runs", "2", "--no-memory", "--plot", tmp_path / "no" / "x.png")
    assert_clean_error(res, "does not exist")


@pytest.mark.parametrize("content", [b"hello, not a model\n", bytes(range(256)) * 8])
def test_neither_model_nor_artifact(tmp_path, content):
    bad = tmp_path / "thing.pt"
    bad.write_bytes(content)
    assert_clean_error(run_cli("bench", bad, "--input-size", "16"), "neither a ptsq artifact nor a pytorch model")


def test_refuses_different_outputs_unless_told(art):
    args = ("bench", spec("ColourNet"), spec("SmallNet"), "--input-size", "16", "--runs", "2", "--warmup", "0")
    assert_clean_error(run_cli(*args), "outputs shapes")
    res = run_cli(*args, "--allow-different-outputs", "--no-memory", "--json")
    assert res.code == 0, res.stderr
    assert len(json.loads(res.stdout)["timings"]) == 2


def test_fp32_runtimes_are_timed_beside_eager_and_int8_is_shown_against_the_fastest(art):
    pytest.importorskip("onnxruntime")
    res = run_cli("bench", spec("ColourNet"), art, "--fp32-runtimes", "onnxruntime", "--runs", "3", "--warmup", "1",
                  "--no-memory", "--json")  # fmt: skip
    assert res.code == 0, res.stderr
    t = json.loads(res.stdout)["timings"]
    assert [r["kind"] for r in t] == ["fp32", "fp32 (onnxruntime)", f"int8 ({legacy.default_engine()})"]
    best = min((r for r in t if r["kind"].startswith("fp32")), key=lambda r: r["median_ms"])
    for r in t:
        assert r["best_fp32"] == best["label"]
        assert r["speedup_vs_best_fp32"] == pytest.approx(best["median_ms"] / r["median_ms"], rel=1e-2)
    assert t[0]["speedup"] == 1.0  # the first model (eager fp32) stays the base of "speed-up"
    assert_clean_error(run_cli("bench", spec("ColourNet"), art, "--fp32-runtimes", "tensorrt"), "tensorrt")
