"""Range-setting observers, cross-layer equalization and bias correction (ptsq/algorithms)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import fx, nn

from ptsq.algorithms.entropy import EntropyObserver
from ptsq.algorithms.equalization import equalize, find_pairs
from ptsq.algorithms.mse import MSEObserver
from ptsq.algorithms.percentile import PercentileObserver
from ptsq.config import QuantConfig
from ptsq.errors import ConfigError
from ptsq.fidelity import sqnr_db


def _calib(n: int = 5, shape: tuple[int, ...] = (8, 3, 32, 32)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


def test_unknown_observer_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match="observer 'kl'") as e:
        QuantConfig(fx={"observer": "kl"})
    assert "entropy" in e.value.hint


def _outlier_data() -> torch.Tensor:
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    x[0] = 200.0
    return x


@pytest.mark.parametrize("cls", [PercentileObserver, EntropyObserver])
def test_percentile_and_entropy_clip_a_rare_outlier(cls):
    """A Gaussian with one huge outlier: min-max spends the range on it; these rules clip it."""
    obs = cls(reduce_range=True)
    x = _outlier_data()
    obs(x)
    lo, hi = obs.chosen_range()
    assert -10.0 < lo < -1.0 and 1.0 < hi < 20.0, (lo, hi)
    scale, zp = obs.calculate_qparams()
    q = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), 0, 127)
    mm = torch.fake_quantize_per_tensor_affine(x, 204.0 / 127, 3, 0, 127)
    assert sqnr_db(x[1:], q[1:]) > sqnr_db(x[1:], mm[1:]) + 10


def test_mse_range_has_lower_error_than_min_max_and_histogram():
    from ptsq.algorithms._histogram import observer_module

    base = observer_module()  # torch.ao's observers, or torchao's once torch.ao.quantization is gone
    x = _outlier_data()
    errors = {}
    for cls in (MSEObserver, base.MinMaxObserver, base.HistogramObserver):
        obs = cls(reduce_range=True)
        obs(x)
        scale, zp = obs.calculate_qparams()
        q = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), 0, 127)
        errors[cls.__name__] = float((x - q).pow(2).sum())
    assert errors["MSEObserver"] <= 1.01 * min(errors["MinMaxObserver"], errors["HistogramObserver"]), errors


def test_non_negative_data_keeps_zero_exact():
    obs = MSEObserver(reduce_range=True)
    obs(torch.rand(10_000) * 6.0)
    lo, hi = obs.chosen_range()
    assert lo == 0.0 and 4.0 < hi <= 6.0


class Chain(nn.Module):
    """conv -> ReLU -> depthwise -> PReLU -> maxpool -> conv -> ReLU6 -> conv -> linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.r1 = nn.ReLU()
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.p = nn.PReLU(16)
        self.pool = nn.MaxPool2d(2)
        self.c2 = nn.Conv2d(16, 8, 1)
        self.r6 = nn.ReLU6()
        self.c3 = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.p(self.dw(self.r1(self.c1(x)))))
        return self.c3(self.r6(self.c2(x))).mean((2, 3))


def test_equalization_keeps_fp32_outputs_and_skips_relu6():
    torch.manual_seed(0)
    m = Chain().eval()
    with torch.no_grad():  # very unequal channel ranges, as after BN folding
        m.c1.weight.mul_(torch.logspace(-2, 1, 16).reshape(16, 1, 1, 1))
        m.p.weight.uniform_(0.05, 0.3)
    gm = fx.symbolic_trace(copy.deepcopy(m))
    pairs = find_pairs(gm)
    assert ("c1", "dw") in pairs and ("dw", "c2") in pairs
    assert ("c2", "c3") not in pairs  # ReLU6 is not scale-equivariant
    x = torch.randn(4, 3, 16, 16)
    before = gm.c1.weight.abs().amax((1, 2, 3))
    assert equalize(gm) == 2
    assert torch.allclose(gm(x), m(x), rtol=1e-4, atol=1e-5)
    after = gm.c1.weight.abs().amax((1, 2, 3))
    assert float(after.max() / after.min()) < float(before.max() / before.min()) / 10


def test_equalization_leaves_values_with_two_users_alone():
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x)
            return self.b(y) + y

    assert find_pairs(fx.symbolic_trace(Residual())) == []
