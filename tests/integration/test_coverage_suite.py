"""The coverage suite's bookkeeping: int8 compute share, and fp32-only models never count as quantized."""

from __future__ import annotations

import pytest
import torch
from benchmarks.bench_coverage import _macs, summarize, summary_line
from benchmarks.coverage_report import render

import ptsq
from ptsq.config import QuantConfig
from tests.models import Sandwich, SmallNet, ValueAssert


@pytest.mark.torch_ao  # the coverage suite counts MACs on the FX engine's quantized modules
def test_int8_share_counts_quantized_and_fp32_compute():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    model = SmallNet().eval()
    assert _macs(model, (x,))["int8"] == 0
    qm = ptsq.quantize(model, [torch.randn(2, 3, 16, 16) for _ in range(3)], config=QuantConfig(speed_guard=0),
                       progress=False)  # fmt: skip
    m = _macs(qm.module, (x,))
    assert m["fp32"] == 0 and m["int8"] == _macs(model, (x,))["fp32"] > 0
    sand = Sandwich(ValueAssert()).eval()
    sq = ptsq.quantize(sand, [torch.randn(2, 3, 8, 8) for _ in range(3)], config=QuantConfig(skip=("name:conv2",),
                       speed_guard=0), progress=False)  # fmt: skip
    m = _macs(sq.module, (torch.randn(1, 3, 8, 8),))
    assert m["int8"] > 0 and m["fp32"] > 0  # conv2 kept fp32 by the skip rule


def test_fp32_only_and_failed_models_are_listed_not_counted(tmp_path):
    rows = [
        {"key": "tv:a", "status": "ok", "int8_share": 0.9, "speedup": 2.0, "layers": {"int8": 3, "fp32": 1},
         "fp32_reasons": ["cannot be traced: X"]},
        {"key": "tv:b", "status": "fp32 only", "int8_share": 0.0, "speedup": 1.0,
         "reason": "quantize() returned, but no conv/linear compute runs in int8"},
        {"key": "timm:c", "status": "failed", "stage": "quantize", "reason": "TraceError: boom"},
        {"key": "tv:d", "status": "not run", "reason": "120 M parameters is over the suite's budget"},
    ]  # fmt: skip
    s = summarize(rows)
    assert (s["ran"], s["quantized"], s["faster"], s["fp32_only"], s["not_run"]) == (3, 1, 1, 1, 1)
    assert summary_line(s).startswith("1/3 models quantized") and "1 not run" in summary_line(s)
    text = render({"rows": rows}, tmp_path / "COVERAGE.md").read_text()
    for key in ("tv:b", "timm:c", "tv:d"):
        assert f"**{key}**" in text
    assert "TraceError: boom" in text and "cannot be traced: X" in text
