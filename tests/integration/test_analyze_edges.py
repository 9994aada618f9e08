"""ptsq analyze as a new user meets it: its headline equals quantize's self-check on the same data, its
per-layer phase shows progress, layer names are never cut, and its columns are explained."""

from __future__ import annotations

import io
import re
import sys

import torch
from rich.console import Console
from torch import nn

import ptsq
from ptsq.analysis.sensitivity import analyze
from ptsq.cli.analyze import COLUMNS, render
from ptsq.config import Pt2eOptions, QuantConfig

# the default engine: fx, or PT2E (run uncompiled) where torch.ao.quantization is gone
CFG = QuantConfig(speed_guard=0, pt2e=Pt2eOptions(compile=False))


class LongNames(nn.Module):
    """Layer names as long as real networks' (``_blocks.0._project_conv`` and longer)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder_stage_one_block_zero_expand_conv = nn.Conv2d(3, 16, 3, padding=1)
        self.encoder_stage_one_block_zero_project_conv = nn.Conv2d(16, 16, 3, padding=1)
        self.classifier_head_linear_projection = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.encoder_stage_one_block_zero_expand_conv(x))
        y = torch.relu(self.encoder_stage_one_block_zero_project_conv(y))
        return self.classifier_head_linear_projection(y.mean((2, 3)))


def _batches(n: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(4, 3, 16, 16, generator=g) for _ in range(n)]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:  # rich draws its live progress only on a terminal
        return True


def test_headline_is_the_self_checks_figure_and_progress_is_shown(monkeypatch):
    torch.manual_seed(0)
    model = LongNames().eval()
    # 16 samples: the self-check holds back a quarter of them (4), the most it takes from short data
    qm = ptsq.quantize(model, _batches(), config=CFG, progress=False)
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    rep = analyze(model, _batches(), config=CFG, progress=True)
    monkeypatch.undo()
    assert rep.samples == qm.fidelity["samples"] == 4
    assert rep.baseline_sqnr_db == qm.fidelity["sqnr_db"]
    shown = term.getvalue()
    n = len(rep.layers)
    assert "per-layer sensitivity" in shown and f"{n}/{n}" in shown  # what, and the count (with an ETA column)


def test_layer_names_are_folded_never_cut_and_columns_are_explained(repo_root):
    data = {"model": "m", **analyze(LongNames().eval(), _batches(), config=CFG).to_dict(), "command": None}
    for width in (80, 100, 160):
        buf = io.StringIO()
        render(Console(file=buf, width=width, force_terminal=False), data)
        text = buf.getvalue()
        names, current = [], None
        for line in text.splitlines():
            cells = line.split("│")
            if len(cells) < 4:
                continue
            rank, layer = cells[1].strip(), cells[2].strip()
            if rank.isdigit():
                current = [layer]
                names.append(current)
            elif current is not None and layer:
                current.append(layer)
        assert ["".join(parts) for parts in names] == [r["name"] for r in data["layers"]], (width, text)
        assert "…" not in text.split(COLUMNS[:20])[0]  # nothing elided in the table
        assert COLUMNS in " ".join(text.split()) or " ".join(COLUMNS.split()) in " ".join(text.split())
    docs = (repo_root / "docs" / "accuracy.md").read_text()
    assert re.search(r"\*\*layer SQNR\*\*.*ReLU6.*far below the whole model", docs, re.S)
