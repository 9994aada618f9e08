"""Graceful capture: untraceable parts stay fp32 (with the reason), the rest is int8; --strict fails."""

from __future__ import annotations

import pytest
import torch

import ptsq
from ptsq.config import QuantConfig
from ptsq.errors import TraceError
from tests.models import (
    DataDependent,
    NumpyCall,
    NumpyPercentile,
    RootUntraceable,
    Sandwich,
    ShapeFromData,
    ValueAssert,
)

pytestmark = pytest.mark.torch_ao  # the FX engine's fp32 fallback for untraceable code

EXACT = QuantConfig(speed_guard=0)


def _batches(shape, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


BLOCKS = {
    "tensor control flow": (DataDependent, "x.mean() > 0"),
    "numpy on a shape": (NumpyCall, "np.sqrt"),
    "numpy on values": (NumpyPercentile, "np.percentile"),
    "data-dependent shape": (ShapeFromData, "int((x.mean"),
    "assert on values": (ValueAssert, "assert bool"),
}


@pytest.mark.parametrize("case", list(BLOCKS))
def test_untraceable_block_stays_fp32_rest_int8(case):
    block, line = BLOCKS[case]
    model = Sandwich(block()).eval()
    calib = _batches((2, 3, 12, 12), n=4)
    qm = ptsq.quantize(model, calib, config=EXACT, progress=False)
    prec = qm.precision
    assert prec["block"]["precision"] == "fp32"
    reason = prec["block"]["reason"]
    assert "cannot be traced" in reason and line in reason and "models.py" in reason  # first line + where
    for name in ("conv1", "conv2", "fc"):
        assert prec[name]["precision"] == "int8", (name, prec)
    assert any(line in n for n in qm.manifest["notes"])
    assert qm.fidelity["sqnr_db"] > 15
    with pytest.raises(TraceError, match="block") as info:
        ptsq.quantize(model, calib, config=QuantConfig(strict=True, speed_guard=0), progress=False)
    assert line in str(info.value)


def test_untraceable_top_level_forward_quantizes_its_children():
    model = RootUntraceable().eval()
    calib = _batches((2, 3, 10, 10), n=4)
    qm = ptsq.quantize(model, calib, config=EXACT, progress=False)
    prec = qm.precision
    top = prec["(top level)"]
    assert top["precision"] == "fp32" and "y.sum() > 0" in top["reason"] and "models.py" in top["reason"]
    assert any(n.startswith("conv.") and p["precision"] == "int8" for n, p in prec.items()), prec
    x = calib[0]
    assert torch.allclose(qm(x), model(x), atol=0.1)
    with pytest.raises(TraceError, match="top-level forward") as info:
        ptsq.quantize(model, calib, config=QuantConfig(strict=True), progress=False)
    assert "y.sum() > 0" in str(info.value)
