"""Speed-guard verdicts are measured once per machine and reused, so runs keep the same layers fp32."""

from __future__ import annotations

import json

import torch
from torch import nn

from ptsq.engines.fx import speed as fx_speed


def test_verdicts_are_kept_per_machine_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("PTSQ_CACHE_DIR", str(tmp_path))
    fx_speed._verdict.cache_clear()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)).eval()
    args = (torch.randn(1, 3, 24, 24),)
    # margin 0: every measured layer counts as slow, so both convs must come back with their ratio
    measured = fx_speed.slow_layers(model, args, "x86", margin=0.0)
    assert sorted(measured) == ["0", "2"] and all("x slower than fp32" in r for r in measured.values())
    store = tmp_path / fx_speed.STORE
    data = json.loads(store.read_text())
    (machine,) = data
    assert "x86" in machine and len(data[machine]) == 2 and all(v > 0 for v in data[machine].values())

    # a stored verdict wins over a new measurement: mark every layer 1000x slower, forget the process cache
    store.write_text(json.dumps({machine: {k: 1000.0 for k in data[machine]}}))
    fx_speed._verdict.cache_clear()
    slow = fx_speed.slow_layers(model, args, "x86", margin=1.5)
    assert sorted(slow) == ["0", "2"] and "1000.0x slower" in slow["0"]

    # an unreadable cache is ignored and replaced, never an error
    store.write_text("not json")
    fx_speed._verdict.cache_clear()
    assert sorted(fx_speed.slow_layers(model, args, "x86", margin=0.0)) == ["0", "2"]
    assert len(json.loads(store.read_text())[machine]) == 2
    fx_speed._verdict.cache_clear()
