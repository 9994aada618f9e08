"""Fan-out of independent jobs on Ray: errors, crashes and hangs reported per job; analyze/budget unchanged."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tests.cli.conftest import run_cli
from tests.distributed.conftest import ROOT
from tests.distributed.jobs import work
from tests.models import SmallNet, randomize_bn

MODELS = ROOT / "tests" / "models.py"


@pytest.mark.slow
def test_fan_out_isolates_failures_and_keeps_order(ray_cluster, tmp_path):
    from ptsq.distributed.fanout import fan_out

    once = tmp_path / "killed-once"
    jobs = [
        ("a", ("ok", 2)), ("raises", ("raise", 3)), ("b", ("ok", 4)), ("killed-once", ("kill-once", 5, str(once))),
        ("always-killed", ("kill-always", 6)), ("hangs", ("hang", 7)), ("c", ("ok", 8)),
    ]  # fmt: skip
    out = fan_out(work, jobs, ray_cluster, timeout=45, retries=1)
    by = {o.key: o for o in out}
    assert [o.key for o in out] == [k for k, _ in jobs]  # the order of the jobs, not of completion
    for key, (kind, x, *_rest) in jobs:
        if kind in ("ok", "kill-once"):
            assert by[key].ok and by[key].value == work("ok", x)  # what the sequential loop gives
    assert int(once.read_text()) != os.getpid()  # the worker really was SIGKILLed, then the job retried
    assert by["raises"].kind == "error" and by["raises"].error == "ValueError: job 3 refuses"
    assert by["always-killed"].kind == "crashed" and "died" in by["always-killed"].error
    assert by["hangs"].kind == "timeout" and "timed out after 45 s" in by["hangs"].error


@pytest.mark.slow
@pytest.mark.torch_ao  # analyze on Ray sends FX models to workers (PT2E's programs do not pickle)
def test_analyze_and_budget_on_ray_equal_single_process(ray_cluster, labelled):
    import ptsq
    from ptsq.analysis.budget import quantize_with_budget
    from ptsq.data.images import CalibrationImages

    torch.manual_seed(0)
    model = randomize_bn(SmallNet())
    cfg = ptsq.QuantConfig(speed_guard=0)

    def calib():
        return CalibrationImages(labelled, ptsq.preset("unit", size=(32, 32)), num=24, batch_size=8)

    one = ptsq.analyze(model, calib(), config=cfg).to_dict()
    many = ptsq.analyze(model, calib(), config=cfg, ray=ray_cluster, workers=2).to_dict()
    assert many == one and len(one["layers"]) == 4

    kw = dict(min_sqnr=60, config=cfg, latency_runs=0)
    one_b = quantize_with_budget(model, calib(), **kw).to_dict()
    many_b = quantize_with_budget(model, calib(), ray=ray_cluster, **kw).to_dict()
    assert many_b == one_b
    assert any(s["kind"] == "estimate" for s in one_b["steps"])  # the per-layer trials did run


@pytest.mark.slow
@pytest.mark.torch_ao  # analyze on Ray sends FX models to workers (PT2E's programs do not pickle)
def test_cli_analyze_on_ray_same_ranking(ray_cluster, labelled, small_files):
    args = ("analyze", f"{MODELS}:SmallNet", "--weights", small_files["weights"], "--calib", labelled,
            "--preset", "unit", "--input-size", "32", "--num-calib", "24", "--batch-size", "8", "--speed-guard", "0",
            "--json")  # fmt: skip
    one = run_cli(*args)
    address = ray_cluster.ray.get_runtime_context().gcs_address
    many = run_cli(*args, "--ray", address, "--workers", "2")
    assert one.code == 0 and many.code == 0, many.stderr
    assert json.loads(many.stdout) == json.loads(one.stdout)


@pytest.mark.slow
def test_engine_auto_trials_on_ray_same_table(ray_cluster, tmp_path):
    import ptsq

    torch.manual_seed(0)
    model = randomize_bn(SmallNet())
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(8, 3, 32, 32, generator=g) for _ in range(4)]
    cfg = ptsq.QuantConfig(engine="auto", speed_guard=0).replace(**{"auto.engines": ("fx", "onnx")})
    one = ptsq.quantize(model, calib, cfg, progress=False)
    many = ptsq.quantize(model, calib, cfg, progress=False, ray=ray_cluster, workers=2)

    def table(qm):  # the engines' check rows; timings (and so the choice) are this machine's noise
        return [{k: v for k, v in r.items() if k not in ("median_ms", "speedup", "bytes", "chosen")}
                for r in qm.manifest["auto"]["engines"]]  # fmt: skip

    assert table(many) == table(one) and len(table(one)) == 2
    # every engine judged on the same held-back samples as in one process
    assert many.manifest["check"]["samples"] == one.manifest["check"]["samples"] > 0
    assert many.manifest["calibration"]["held_back_samples"] == one.manifest["calibration"]["held_back_samples"]
    # the chosen artifact's speed figures are the driver's own, measured after the trials
    speed = many.manifest["speed"]
    assert speed["verdict"] in ("faster", "slower"), speed
    assert "driver" in speed.get("where", "") or "requantized_here" in many.manifest["auto"], speed
    chosen = many.manifest["auto"]["chosen"]
    saved = ptsq.load(many.save(tmp_path / "auto.bin"))  # rebuilt from the worker's artifact, saved again
    assert saved.manifest["auto"]["chosen"] == chosen and saved.manifest["engine"] == chosen
    x = calib[0]
    assert torch.equal(torch.as_tensor(saved(x)).float(), torch.as_tensor(many(x)).float())


@pytest.mark.slow
@pytest.mark.skipif(torch.backends.quantized.engine not in ("x86", "fbgemm"), reason="fbgemm's slow kernel")
def test_auto_on_ray_gives_the_chosen_artifact_the_speed_check_of_one_process(ray_cluster):
    """SlowDepthwise's int8 form is slower than fp32 (fbgemm's depthwise kernel); with the speed guard off
    nothing may move it, so the verdict must be 'slower' and said, measured in the driver, as in one process."""
    import warnings

    import ptsq
    from ptsq.errors import SpeedWarning
    from tests.models import SlowDepthwise

    torch.manual_seed(0)
    model = SlowDepthwise().eval()
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(8, 3, 63, 63, generator=g) for _ in range(2)]
    cfg = ptsq.QuantConfig(engine="auto", speed_guard=0).replace(**{"auto.engines": ("fx",)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qm = ptsq.quantize(model, calib, cfg, progress=False, ray=ray_cluster, workers=1)
    speed = qm.summary()["speed"]
    assert speed["verdict"] == "slower" and speed["speedup"]["1"] < 1.0, speed
    assert "driver" in speed["where"] and speed["pairs"][0]["threads"] == 1
    assert [w for w in caught if issubclass(w.category, SpeedWarning)]


def test_quantize_ray_needs_something_to_spread():
    res = run_cli("quantize", f"{MODELS}:SmallNet", "--calib", ".", "-o", "x.pt", "--ray", "auto")
    assert res.code == 2 and "has neither" in res.stderr, res.stderr
