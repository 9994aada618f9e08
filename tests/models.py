"""Tiny real models for tests: each exercises one thing the quantizer must get right."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class FaceNet(nn.Module):
    """A face-style net: conv/BN/PReLU, a residual add, linear + PReLU (the classic write-up's case)."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = nn.PReLU(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.act2 = nn.PReLU(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(16, 32)
        self.act3 = nn.PReLU()
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        y = y + self.act2(self.bn2(self.conv2(y)))
        y = self.pool(y).flatten(1)
        return self.fc2(self.act3(self.fc1(y)))


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def]
        (x,) = ctx.saved_tensors
        return 2 * x * g


def soft_clip(x: torch.Tensor) -> torch.Tensor:
    """A plain Python function called from forward."""
    return torch.tanh(x / 3.0) * 3.0


class SquareBlock(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Square.apply(x) * 0.1 + x


class MixedNet(nn.Module):
    """Conv, PReLU, GELU, LayerNorm, SiLU, a custom autograd function and a plain Python function."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.act1 = nn.PReLU(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.gelu = nn.GELU()
        self.square = SquareBlock()
        self.norm = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.gelu(self.conv2(y)) + y
        y = soft_clip(self.square(y))
        y = F.silu(y).mean((2, 3))
        return self.fc(self.norm(y))


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:  # control flow on a tensor value: FX cannot trace this
            return x * 0.5
        return x


class NumpyCall(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = float(np.sqrt(x.shape[1]))  # shape is a Proxy under FX: numpy cannot take it
        return x / scale


class PartlyUntraceable(nn.Module):
    """Quantizable convs around one untraceable block."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.gate = DataDependent()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv1(x))
        y = self.conv2(self.gate(y))
        return self.fc(y.mean((2, 3)))


class RootUntraceable(nn.Module):
    """The untraceable line is in the top-level forward: nothing to fall back to."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if y.sum() > 0:
            y = y * 2
        return y


class ValueAssert(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert bool((x > -1e4).all()), "activation out of range"  # an assert on tensor values
        return x


class ShapeFromData(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = max(1, int((x.mean((0, 2, 3)) > 0).sum()))  # a data-dependent shape: channels kept
        return x + x[:, :k].mean(1, keepdim=True)


class NumpyPercentile(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hi = float(np.percentile(x.detach().numpy(), 99))  # a call into non-PyTorch code on the values
        return x.clamp(max=hi)


class Sandwich(nn.Module):
    """conv -> ``block`` -> conv -> linear: only ``block`` (untraceable) should stay fp32."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.block = block
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.block(self.relu(self.conv1(x))))
        return self.fc(y.mean((2, 3)))


def sandwich_assert() -> nn.Module:
    return Sandwich(ValueAssert())


class TwoInOut(nn.Module):
    """Two image inputs (different sizes) -> a tuple (logits, features) and a list."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fa = torch.relu(self.a(x)).mean((2, 3))
        fb = torch.relu(self.b(y)).mean((2, 3))
        return self.fc(torch.cat([fa, fb], 1)), [fa, fb]


class DictInOut(nn.Module):
    """Keyword inputs ``image`` and ``aux``; a dict output (a segmentation-style head)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)
        self.fc = nn.Linear(8 + 4, 3)

    def forward(self, image: torch.Tensor, aux: torch.Tensor) -> dict[str, torch.Tensor]:
        f = torch.relu(self.conv(image))
        return {"mask": self.head(f), "logits": self.fc(torch.cat([f.mean((2, 3)), aux], 1))}


class OneDictArg(nn.Module):
    """Takes a single dict positional argument (keys are not parameter names)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.relu(self.conv(batch["pixels"])) * batch["gain"]


class SmallNet(nn.Module):
    """A small classifier for fast CLI tests (32x32 RGB, 10 classes)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics, as a trained model has."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            if isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.3)
    return model.eval()


def settle_bn(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """Re-estimate BatchNorm statistics on data, so a randomly initialised net has sane activations.

    Random torchvision initialisations can shrink activations to ~1e-9 (mobilenet_v2), which makes
    any fidelity figure meaningless; a trained net's BN statistics match its data, as here.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches given
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    return model.eval()


class FixedSizeNet(nn.Module):
    """Accepts only 16x16 inputs (a Linear after flatten), to test input-size errors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class ViewNet(nn.Module):
    """Flattens with x.view(x.size(0), -1) after conv + pool, like many hand-written CNNs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 13 * 13, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv(x)))
        return self.fc(x.view(x.size(0), -1))


class ColourNet(nn.Module):
    """Predicts the brightest colour channel (0 red, 1 green, 2 blue): outputs you can control with images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.eye(3) * 4.0)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


class SlowDepthwise(nn.Module):
    """A 5x5 stride-2 depthwise conv without padding on 63x63 inputs: fbgemm's int8 kernel for it runs
    ~100x slower than fp32 on x86 (EfficientNet-Lite1's case), so int8 can only win with it in fp32."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(3, 144, 1)
        self.act = nn.ReLU()
        self.dw = nn.Conv2d(144, 144, 5, stride=2, groups=144)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(144, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.dw(self.act(self.expand(x))))).flatten(1))

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(1, 3, 63, 63),)


class IslandNet(nn.Module):
    """int8 convs, then a big conv meant to stay fp32 (an island fed channels-last tensors), then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 128, 3, stride=2, padding=1))
        self.island = nn.Conv2d(128, 256, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.island(torch.relu(self.stem(x))))).flatten(1))


class FrameProbabilities(nn.Module):
    """A voice-activity-style model: one probability per frame (sigmoid), no classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(8, 16, 5, padding=2)
        self.out = nn.Conv1d(16, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(torch.relu(self.conv(x)))).squeeze(1)  # (batch, frames)


class ThreadPicky(nn.Module):
    """Refuses to run at one thread: a forward the speed check's --threads 1 cannot time."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.get_num_threads() == 1:
            raise RuntimeError("this model needs at least 2 threads")
        return self.conv(x).mean((2, 3))


class SpecNet(SmallNet):
    """SmallNet that carries its own input spec (the ``input_spec`` attribute convention)."""

    def __init__(self) -> None:
        super().__init__()
        self.input_spec = {"size": [40, 40], "scale": 1.0, "mean": [127.5], "std": [127.5], "crop_pct": 1.0}


class ShuffleBlocks(nn.Module):
    """ShuffleNet-style: channel shuffle (view/transpose/contiguous), chunk, a branch conv and a cat, twice."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU())
        self.branch1 = nn.Sequential(nn.Conv2d(c // 2, c // 2, 1), nn.ReLU())
        self.branch2 = nn.Sequential(nn.Conv2d(c // 2, c // 2, 1), nn.ReLU())
        self.head = nn.Conv2d(c, 4, 1)

    @staticmethod
    def shuffle(x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for branch in (self.branch1, self.branch2):
            a, b = self.shuffle(x).chunk(2, dim=1)
            x = torch.cat([a, branch(b)], dim=1)
        return self.head(x)


class TransposedConv1d(nn.Module):
    """ConvTranspose1d + BatchNorm + ReLU, then Conv1d + ReLU + Conv1d (a 1-d decoder)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose1d(8, 16, 4, stride=2)
        self.bn = nn.BatchNorm1d(16)
        self.act = nn.ReLU()
        self.conv = nn.Conv1d(16, 16, 3)
        self.act2 = nn.ReLU()
        self.out = nn.Conv1d(16, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act2(self.conv(self.act(self.bn(self.up(x))))))


class RepeatedConv(nn.Module):
    """A conv applied a data-dependent number of times: torch.export cannot capture it, TorchScript can."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(int(x.abs().mean().clamp(1, 3))):  # a loop count read from the values
            x = torch.relu(self.conv(x)) * 0.5 + x
        return x


class BranchNumpy(nn.Module):
    """Data-dependent branching (export cannot) and numpy (TorchScript cannot): no fp32 island for it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:
            return x * float(np.sqrt(2.0))
        return x
