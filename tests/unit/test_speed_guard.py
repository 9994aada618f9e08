"""Speed-guard verdicts: measured at the deployment thread count, stored with how they were measured,
reused so runs keep the same layers fp32, and replaced when the whole model contradicts them."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ptsq.engines.fx import speed as fx_speed

pytestmark = pytest.mark.torch_ao  # the FX engine's speed guard (PT2E's: tests/unit/test_pt2e_speed.py)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PTSQ_CACHE_DIR", str(tmp_path))
    fx_speed.forget_settled()
    yield tmp_path / fx_speed.STORE
    fx_speed.forget_settled()


def _model() -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)).eval(), (torch.randn(1, 3, 24, 24),)


def test_verdicts_are_kept_per_machine_and_thread_count_and_reused(cache):
    model, args = _model()
    # margin 0: every measured layer counts as slow, so both convs must come back with their ratio
    measured = fx_speed.slow_layers(model, args, "x86", margin=0.0, threads=(1,))
    assert sorted(measured) == ["0", "2"] and all(
        "x slower than fp32" in r and "at 1 thread" in r for r in measured.values()
    )
    data = json.loads(cache.read_text())
    (machine,) = data
    assert "x86" in machine and "| 1 threads |" in machine and len(data[machine]) == 2
    for entry in data[machine].values():  # how each verdict was measured is stored with it
        assert entry["ratio"] > 0 and entry["threads"] == 1 and "per-thread CPU time" in entry["method"]
        assert entry["int8_ms"] > 0 and entry["fp32_ms"] > 0 and "at" in entry and "load_per_core" in entry

    # a stored verdict wins over a new measurement: mark every layer 1000x slower, forget the process's own
    store = {machine: {k: {**v, "ratio": 1000.0, "load_per_core": None} for k, v in data[machine].items()}}
    cache.write_text(json.dumps(store))
    fx_speed.forget_settled()
    slow = fx_speed.slow_layers(model, args, "x86", margin=1.5, threads=(1,))
    assert sorted(slow) == ["0", "2"] and "1000.0x slower" in slow["0"]

    # verdicts of one thread count say nothing about another: 2 threads is measured afresh
    fx_speed.slow_layers(model, args, "x86", margin=1.5, threads=(2,))
    assert len(json.loads(cache.read_text())) == 2

    # an unreadable cache is ignored and replaced, never an error
    cache.write_text("not json")
    fx_speed.forget_settled()
    assert sorted(fx_speed.slow_layers(model, args, "x86", margin=0.0, threads=(1,))) == ["0", "2"]
    assert len(json.loads(cache.read_text())[machine]) == 2


def test_an_in_context_measurement_replaces_a_contradicted_verdict(cache):
    model, args = _model()
    assert fx_speed.slow_layers(model, args, "x86", margin=1e6, threads=(1,)) == {}
    conv = model[2]
    fx_speed.record_in_context(conv, (1, 8, 22, 22), "x86", 1, ratio=40.0, int8_ms=8.0, fp32_ms=0.2)
    (machine,) = json.loads(cache.read_text())
    entry = next(v for k, v in json.loads(cache.read_text())[machine].items() if "(8, 8," in k)
    assert entry["ratio"] == 40.0 and "in context" in entry["method"]
    assert entry["contradicted"]["ratio"] < 40.0 and "isolated" in entry["contradicted"]["method"]
    fx_speed.forget_settled()  # a new process: the file alone now keeps the layer fp32
    slow = fx_speed.slow_layers(model, args, "x86", margin=1.5, threads=(1,))
    # layer 2 is fp32 from the file alone; layer 0 is whatever this machine measures (under load a tiny
    # 3-channel conv can come out slow in int8 too), but never the in-context record of another layer
    assert "40.0x slower" in slow["2"] and "40.0x" not in slow.get("0", "")


def test_a_verdict_measured_under_load_is_measured_again_when_the_machine_is_quiet(cache, monkeypatch):
    model, args = _model()
    fx_speed.slow_layers(model, args, "x86", margin=1.5, threads=(1,))
    data = json.loads(cache.read_text())
    (machine,) = data
    loaded = {k: {**v, "ratio": 1000.0, "load_per_core": 5.0} for k, v in data[machine].items()}
    cache.write_text(json.dumps({machine: loaded}))
    fx_speed.forget_settled()
    monkeypatch.setattr(fx_speed, "load_per_core", lambda: 0.5)  # now quieter than half of 5.0
    fx_speed.slow_layers(model, args, "x86", margin=1.5, threads=(1,))
    again = json.loads(cache.read_text())[machine]
    assert all(v["ratio"] < 1000.0 and v["load_per_core"] == 0.5 for v in again.values())
