"""PT2E speed verification: verdicts timed on the oneDNN ops the compiled program calls, kept per machine."""

from __future__ import annotations

import json

import torch
from torch import nn

from ptsq.engines.pt2e import speed


def test_verdicts_are_measured_on_real_kernels_kept_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("PTSQ_CACHE_DIR", str(tmp_path))
    speed.forget()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10 * 10, 4))
    args = (torch.randn(1, 3, 12, 12),)
    assert speed.slow_layers(model, args, margin=1e6) == {}
    store = json.loads((tmp_path / speed.STORE).read_text())
    (machine,) = store
    assert len(store[machine]) == 2 and all(0 < v < 1e6 for v in store[machine].values())  # conv and linear timed

    # a stored verdict wins over a new measurement: mark both 1000x slower, forget the process cache
    (tmp_path / speed.STORE).write_text(json.dumps({machine: {k: 1000.0 for k in store[machine]}}))
    speed.forget()
    slow = speed.slow_layers(model, args, margin=1.5)
    assert sorted(slow) == ["0", "3"] and "1000.0x slower" in slow["0"]
    speed.forget()


def test_a_slow_verdict_makes_an_fp32_region_with_its_reason(tmp_path, monkeypatch):
    import ptsq
    from ptsq.config import Pt2eOptions, QuantConfig

    monkeypatch.setenv("PTSQ_CACHE_DIR", str(tmp_path))
    speed.forget()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)).eval()
    args = (torch.randn(1, 3, 12, 12),)
    key = repr(speed._key(model[2], (1, 8, 10, 10)))
    speed.slow_layers(model, args, margin=1e6)  # measure and store both layers
    store = json.loads((tmp_path / speed.STORE).read_text())
    (machine,) = store
    store[machine][key] = 50.0  # as if this conv's int8 kernel were 50x slower on this machine
    (tmp_path / speed.STORE).write_text(json.dumps(store))
    speed.forget()
    calib = [torch.randn(2, 3, 12, 12) for _ in range(3)]
    qm = ptsq.quantize(model, calib, config=QuantConfig(engine="pt2e", pt2e=Pt2eOptions(compile=False)), progress=False)
    rows = qm.precision
    assert rows["0"]["precision"] == "int8"
    assert rows["2"]["precision"] == "fp32" and "50.0x slower" in rows["2"]["reason"]
    assert any(n.startswith("speed guard: 1 layer") for n in qm.manifest["notes"])
    speed.forget()


def test_verdicts_are_kept_per_thread_count_within_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("PTSQ_CACHE_DIR", str(tmp_path))
    speed.forget()
    model = nn.Sequential(nn.Conv2d(3, 8, 3))
    args = (torch.randn(1, 3, 12, 12),)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            speed.slow_layers(model, args, margin=1e6)
    finally:
        torch.set_num_threads(before)
        speed.forget()
    store = json.loads((tmp_path / speed.STORE).read_text())
    assert sorted(m.split(" | ")[-2] for m in store) == ["1 threads", "2 threads"], list(store)
