"""Each graph clean-up step keeps fp32 outputs equal (to float rounding) and does what it claims."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ptsq
from ptsq.algorithms.cleanup import GRAPH_STEPS, cleanup
from ptsq.config import QuantConfig
from tests.models import randomize_bn

pytestmark = pytest.mark.torch_ao  # the FX engine's graph clean-up


class SamePadConv(nn.Conv2d):
    """TF-style 'same' padding: a Conv2d subclass whose forward pads and calls F.conv2d."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, k, stride=stride, padding=0, groups=groups, bias=False)
        p = k - 1
        self.pad = nn.ZeroPad2d((p // 2, p - p // 2, p // 2, p - p // 2)) if stride == 1 else nn.ZeroPad2d((0, 1, 0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.pad(x), self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class LiteBlock(nn.Module):
    """EfficientNet-Lite style: same-pad convs, BN, ReLU6, depthwise, residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = SamePadConv(3, 16, 3, stride=2)
        self.bn0 = nn.BatchNorm2d(16)
        self.expand = SamePadConv(16, 32, 1)
        self.bn1 = nn.BatchNorm2d(32)
        self.dw = SamePadConv(32, 32, 3, groups=32)
        self.bn2 = nn.BatchNorm2d(32)
        self.project = SamePadConv(32, 16, 1)
        self.bn3 = nn.BatchNorm2d(16)
        self.act = nn.ReLU6()
        self.fc = nn.Linear(16, 10)
        self.bnf = nn.BatchNorm1d(10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn0(self.stem(x)))
        y = self.act(self.bn1(self.expand(x)))
        y = F.hardtanh(self.bn2(self.dw(y)), 0.0, 6.0)
        x = x + self.bn3(self.project(y))
        return self.bnf(self.fc(x.mean((2, 3))))


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = randomize_bn(LiteBlock())
    with torch.no_grad():
        m.bnf.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.mark.parametrize("steps", [(s,) for s in GRAPH_STEPS] + [GRAPH_STEPS])
def test_cleanup_preserves_fp32_outputs(steps):
    model = _model()
    x = torch.randn(4, 3, 32, 32)
    ref = model(x)
    cleaned, notes = cleanup(model, steps)
    assert torch.allclose(cleaned(x), ref, rtol=1e-4, atol=1e-5)
    if steps in (GRAPH_STEPS, ("conv-modules",), ("fold-bn",)):
        assert notes  # pads only fold once convs are modules
    assert torch.equal(model(x), ref)  # the input model was not touched


def test_cleanup_turns_subclass_convs_into_plain_modules_and_folds():
    cleaned, notes = cleanup(_model(), GRAPH_STEPS)
    kinds = [type(m) for m in cleaned.modules()]
    assert not any(issubclass(k, nn.BatchNorm2d) for k in kinds)  # all folded
    assert sum(k is nn.Conv2d for k in kinds) == 4
    assert not any(k is SamePadConv for k in kinds)
    text = " ".join(notes)
    assert "4 functional convs" in text and "BatchNorms folded" in text
    assert "3 symmetric zero pads" in text  # 1x1 convs have (0,0) pads; the stride-2 pad is asymmetric


def test_cleanup_improves_int8_fidelity_and_clamps_relu6():
    model = _model()
    with torch.no_grad():  # pre-activations far beyond ReLU6's range, as in real MBConv nets
        for bn in (model.bn0, model.bn1, model.bn2):
            bn.weight.mul_(8.0)
    g = torch.Generator().manual_seed(1)
    calib = [torch.randn(8, 3, 32, 32, generator=g) for _ in range(6)]
    plain = ptsq.quantize(model, calib, config=QuantConfig(cleanup=(), speed_guard=0), progress=False)
    ours = ptsq.quantize(model, calib, config=QuantConfig(speed_guard=0), progress=False)
    assert any("ReLU/ReLU6/clamp range" in n for n in ours.manifest["notes"])
    assert ours.fidelity["sqnr_db"] > plain.fidelity["sqnr_db"] + 3.0, (plain.fidelity, ours.fidelity)


def test_speed_guard_reports_layers_it_keeps_fp32():
    """A layer is kept fp32 only with a measured ratio in its reason; margin 0.01 forces the path."""
    model = _model()
    calib = [torch.randn(4, 3, 32, 32) for _ in range(4)]
    qm = ptsq.quantize(model, calib, config=QuantConfig(speed_guard=0.01), progress=False)
    slow = [v for v in qm.precision.values() if "slower than fp32" in v.get("reason", "")]
    assert slow and all(v["precision"] == "fp32" for v in slow)
    assert all("x slower" in v["reason"] for v in slow)


class BatchNormAct(nn.BatchNorm2d):
    """timm-style BatchNorm + activation in one module: tracing turns it into F.batch_norm + SiLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return F.silu(x)


class TimmStyle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = BatchNormAct(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn2 = BatchNormAct(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.dw(self.bn1(self.conv(x))))


def test_functional_batch_norm_after_a_conv_is_folded_without_touching_the_model():
    torch.manual_seed(0)
    model = randomize_bn(TimmStyle()).eval()
    x = torch.randn(2, 3, 16, 16)
    ref = model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cleaned, notes = cleanup(model, ("fold-bn",))
    assert torch.allclose(cleaned(x), ref, rtol=1e-4, atol=1e-5)
    assert not any(n.target is F.batch_norm for n in cleaned.graph.nodes)
    assert "2 BatchNorms folded" in " ".join(notes)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


class ConvBnRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def test_a_conv_kept_fp32_keeps_its_batch_norm_folded_and_its_relu_range():
    # without both, the int8 BatchNorm after a skipped conv is quantized over the pre-BN range and
    # the ReLU's input over the negative half it drops: fidelity fell 4-5 dB on the Fashion ResNet stem
    torch.manual_seed(0)
    model = randomize_bn(ConvBnRelu()).eval()
    calib = [torch.randn(8, 3, 16, 16) for _ in range(6)]
    base = ptsq.quantize(model, calib, config=QuantConfig(speed_guard=0), progress=False)
    kept = ptsq.quantize(model, calib, config=QuantConfig(speed_guard=0, skip=("name:conv1",)), progress=False)
    assert kept.precision["conv1"]["precision"] == "fp32"
    assert "bn1" not in kept.precision  # folded into the fp32 conv
    assert kept.fidelity["sqnr_db"] > base.fidelity["sqnr_db"] - 0.5, (base.fidelity, kept.fidelity)


@pytest.mark.parametrize("layer", ["expand", "dw"])
def test_a_skip_rule_changes_nothing_but_its_layer(layer):
    # the accuracy budget estimates "this layer in fp32" inside the int8 graph, then re-quantizes with a
    # skip rule; they must be the same model. Two bugs made them differ by ~20 dB on EfficientNet-Lite0:
    # a skipped same-pad conv kept its BatchNorm unfolded (an int8 BN over the pre-BN range), and the fp32
    # reference graph carried the biases that bias correction had adjusted for int8 weights.
    from ptsq.analysis.sensitivity import with_float_layers
    from ptsq.fidelity import sqnr_db

    model = _model()
    calib = [torch.randn(8, 3, 32, 32) for _ in range(4)]
    x = torch.randn(8, 3, 32, 32)
    config = QuantConfig(speed_guard=0)
    base = ptsq.quantize(model, calib, config=config, progress=False)
    observed = base.result.debug["observed"]
    with torch.inference_mode():
        assert sqnr_db(model(x), observed(x)) > 80  # the reference graph is the fp32 model
        estimate = with_float_layers(base.result.module, observed, [layer])(x)
    kept = ptsq.quantize(model, calib, config=QuantConfig(speed_guard=0, skip=(f"name:{layer}",)), progress=False)
    assert kept.precision[layer]["precision"] == "fp32"
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in kept.module.modules())
    with torch.inference_mode():
        real = kept.module(x)
    assert sqnr_db(real, estimate) > 60


def test_a_clamped_activation_keeps_every_level_of_its_range():
    # clamp-ranges replaced the observer with one given both the 7-bit quant range and reduce_range=True,
    # which torch applies again: ReLU6 outputs got 64 levels over [0, 6] instead of 128 (Lite0: 16.1 -> 17.8 dB)
    from torch.ao.quantization import get_default_qconfig

    from ptsq.backends import qconfig_name

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU6()).eval()
    calib = [4 * torch.randn(8, 3, 16, 16) for _ in range(4)]  # conv outputs well beyond [0, 6]
    qm = ptsq.quantize(model, calib, config=QuantConfig(speed_guard=0), progress=False)
    obs = get_default_qconfig(qconfig_name("x86")).activation()
    steps = obs.quant_max - obs.quant_min
    assert float(qm.module.get_submodule("0").scale) == pytest.approx(6.0 / steps, rel=0.02)
