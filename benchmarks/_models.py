"""Helpers the benchmark scripts share for random-weight architectures."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def settle_bn(model: nn.Module, batches: list[Any]) -> nn.Module:
    """Re-estimate BatchNorm statistics on real data, as a trained net has them (random-init statistics can
    shrink activations to ~0 and give degenerate outputs). Batches are tensors or tuples of inputs."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for batch in batches:
            try:
                model(*(batch if isinstance(batch, tuple) else (batch,)))
            except Exception:  # detection heads want targets in training mode: keep what was settled so far
                break
    return model.eval()
