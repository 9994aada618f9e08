"""Dynamic mode's precision map lists every layer with weights, not only the quantized ones, each with why."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ptsq
from ptsq.config import QuantConfig


class ConvLSTM(nn.Module):
    """The issue's case: five convs in front of an LSTM and a Linear head ("1 int8, 0 fp32" before)."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv1d(8, 8, 3, padding=1) for _ in range(5)])
        self.norm = nn.LayerNorm(8)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.norm(self.convs(x).transpose(1, 2)))
        y, _ = self.attn(y, y, y)
        return self.head(y[:, -1])


@pytest.mark.torch_ao  # LSTM dynamic int8 is torch.ao's module swap (PT2E and onnx keep it fp32)
def test_every_weighted_layer_is_listed_with_why():
    torch.manual_seed(0)
    model = ConvLSTM().eval()
    no_budget = QuantConfig(dynamic={"min_cosine": 0})
    qm = ptsq.quantize_dynamic(model, example_inputs=(torch.randn(2, 8, 12),), config=no_budget)
    rows = {r["name"]: r for r in qm.manifest["precision"]}
    assert [r["name"] for r in qm.manifest["precision"]] == [
        n for n, _ in model.named_modules() if n in rows
    ]  # in the model's order
    convs = [f"convs.{i}" for i in range(5)]
    for name in convs:
        assert rows[name]["precision"] == "fp32" and "--mode static" in rows[name]["reason"], rows[name]
    assert rows["lstm"]["precision"] == "int8" and rows["head"]["precision"] == "int8"
    assert rows["norm"]["precision"] == "fp32" and "normalisation" in rows["norm"]["reason"]
    assert rows["attn"]["precision"] == "fp32"  # its packed in_proj weights and out_proj stay float in torch
    assert rows["attn.out_proj"]["precision"] == "fp32" and "not a plain Linear" in rows["attn.out_proj"]["reason"]
    assert all(r.get("reason") for r in rows.values() if r["precision"] == "fp32")
    assert qm.summary()["layers"] == {"int8": 2, "fp32": len(rows) - 2}
