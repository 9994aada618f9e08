"""The patterns: each a tiny module written the way real model code is, with its own inputs.

Every pattern names what it stands for (``what``). Weights are seeded; BatchNorm layers get
non-trivial running statistics so that folding them matters. Inputs are batches of 4 unless the
pattern is about the batch itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Batch = Any  # a tensor, a tuple of inputs, or a dict of named inputs


@dataclass(frozen=True)
class Pattern:
    name: str
    what: str
    build: Callable[[], nn.Module]
    batch: Callable[[torch.Generator], Batch]
    speed_guard: bool = False  # time each layer (most patterns turn it off to keep the corpus fast)
    batches: int = 8  # the last 2 are held back for the check, as ptsq.quantize does with 8


PATTERNS: list[Pattern] = []


def pattern(what: str, batch: Callable[[torch.Generator], Batch], *, speed_guard: bool = False):  # type: ignore[no-untyped-def]
    def add(cls: type[nn.Module]) -> type[nn.Module]:
        PATTERNS.append(Pattern(_snake(cls.__name__), what, cls, batch, speed_guard))
        return cls

    return add


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def _bn(n: int, dims: int = 2) -> nn.Module:
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](n)
    g = torch.Generator().manual_seed(n * 7 + dims)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
        bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        bn.weight.copy_(torch.rand(n, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return bn


def image(c: int = 3, hw: int = 12, n: int = 4) -> Callable[[torch.Generator], torch.Tensor]:
    return lambda g: torch.randn(n, c, hw, hw, generator=g)


def seq(t: int = 10, d: int = 16, n: int = 4) -> Callable[[torch.Generator], torch.Tensor]:
    return lambda g: torch.randn(n, t, d, generator=g)


# ----------------------------------------------------------------------------- weights as plain tensors
@pattern("F.linear on weights kept as plain tensor attributes (ported TF/JAX code)", seq(6, 12))
class AttrLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.randn(12, 12) / math.sqrt(12)
        self.b = torch.zeros(12)
        self.out = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(F.linear(x, self.w, self.b)))


@pattern("F.conv2d on a plain tensor attribute, no bias", image())
class AttrConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.randn(8, 3, 3, 3) / 5
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(F.conv2d(x, self.w, padding=1)))


class _Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.randn(16, 16) / 4
        self.gain = torch.rand(16) + 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w) * self.gain


@pattern("a submodule whose tensor attributes feed a functional linear and a scale (mods1.w, mods1.gain)", seq(5, 16))
class AttrHolder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mods1 = _Holder()
        self.fc = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.mods1(x))


@pattern("one nn.Parameter used by two functional linears (tied weights)", seq(4, 16))
class TiedParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(16, 16) / 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(F.linear(x, self.weight))
        return F.linear(h, self.weight)


@pattern("registered buffers normalise the input inside the model ((x - mean) / std)", image())
class BufferNormalise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv((x - self.mean) / self.std)


# ------------------------------------------------------------------------------------ the batch itself
@pattern("torch.chunk over the batch: two halves summed (siamese pairs)", image(2, 8))
class ChunkBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.chunk(self.conv(x), 2)
        return a + b


@pattern("attention between the two halves of a batch (queries from one, keys/values from the other)", seq(6, 16))
class BatchPairAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0] // 2
        left, right = x[:n], x[n:]
        att = torch.softmax(self.q(left) @ self.k(right).transpose(1, 2) / 4.0, dim=-1)
        return att @ self.v(right)


@pattern("flatten with the batch size read from the input (x.view(x.size(0), -1))", image(3, 8))
class ViewBatchFlatten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x))
        return self.fc(y.view(y.size(0), -1))


@pattern("Python control flow on the batch size (if x.size(0) > 1)", image(3, 8))
class BatchBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean((2, 3))
        if x.size(0) > 1:  # batch statistics only when there is a batch
            y = y - y.mean(0, keepdim=True)
        return self.fc(y)


# --------------------------------------------------------------------------------- split and regroup
@pattern("torch.chunk over channels, one conv per half, concatenated", image(8, 10))
class ChunkChannels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = x.chunk(2, dim=1)
        return torch.cat([F.relu(self.a(left)), self.b(right)], dim=1)


@pattern("torch.split with uneven sizes, then two heads", seq(4, 24))
class SplitSizes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.small, self.big = nn.Linear(8, 3), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, [8, 16], dim=-1)
        return self.small(a) + self.big(b)


@pattern("unbind over time, one shared Linear per step, stacked back", seq(5, 12))
class UnbindSteps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.step = nn.Linear(12, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.tanh(self.step(t)) for t in x.unbind(1)], dim=1)


@pattern("the same module called twice (shared conv on two scales)", image(3, 16))
class SharedTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = F.relu(self.conv(x))
        small = F.relu(self.conv(self.pool(x)))
        return big.mean((2, 3)) + small.mean((2, 3))


# ------------------------------------------------------------------------------------------ in place
@pattern("in-place residual and activations (out += identity; relu_; mul_)", image(6, 10))
class InPlaceResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.bn = _bn(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.c1(x).relu_()
        out = self.bn(self.c2(out))
        out += x
        out.mul_(0.5)
        return F.relu(out, inplace=True)


# ---------------------------------------------------------------------------------- outputs and inputs
@pattern("outputs nested in dicts and lists ({'foo': [x]}, [{'foo': [[x]]}])", image(3, 8))
class NestedOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> Any:
        y = self.conv(x)
        return {"foo": [y]}, [{"foo": [[F.relu(y)]]}]


@pattern("a dict of outputs (detection-style heads)", image(3, 10))
class DictHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.cls, self.box = nn.Conv2d(8, 3, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = F.relu(self.body(x))
        return {"scores": self.cls(f), "boxes": self.box(f)}


@pattern(
    "two inputs, two outputs (image + side image, two heads)",
    lambda g: (torch.randn(4, 3, 10, 10, generator=g), torch.randn(4, 3, 6, 6, generator=g)),
)
class TwoInTwoOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3), nn.Conv2d(3, 6, 3)
        self.fc = nn.Linear(12, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fa, fb = self.a(x).mean((2, 3)), self.b(y).mean((2, 3))
        return self.fc(torch.cat([fa, fb], 1)), fa - fb


@pattern(
    "dict batches whose keys name forward parameters (keyword inputs)",
    lambda g: {"image": torch.randn(4, 3, 8, 8, generator=g), "aux": torch.randn(4, 5, generator=g)},
)
class KeywordInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.aux_fc = nn.Linear(5, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, image: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(image).mean((2, 3)) + self.aux_fc(aux))


@pattern(
    "an integer mask input applied with masked_fill (padding mask)",
    lambda g: (torch.randn(4, 7, 16, generator=g), (torch.rand(4, 7, generator=g) > 0.3).long()),
)
class IntMaskInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 16)
        self.score = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.proj(x))
        logits = self.score(h).squeeze(-1).masked_fill(mask == 0, -1e4)
        w = torch.softmax(logits, dim=-1)
        return (w.unsqueeze(-1) * h).sum(1)


@pattern("logits plus integer argmax and top-k indices as outputs", seq(1, 16))
class IntOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.fc(x.flatten(1))
        return logits, logits.argmax(-1)


# ---------------------------------------------------------------------------------------- embeddings
@pattern(
    "nn.EmbeddingBag fed (indices, offsets) batches: two 1-D integer inputs",
    lambda g: (torch.randint(0, 30, (14,), generator=g), torch.tensor([0, 3, 7, 10])),
)
class EmbeddingBagOffsets(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(30, 12, mode="mean")
        self.fc = nn.Linear(12, 4)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bag(indices, offsets))


@pattern(
    "token ids through nn.Embedding, a Linear, masked mean pooling and L2 normalisation (sentence encoder)",
    lambda g: (torch.randint(1, 50, (4, 9), generator=g), torch.ones(4, 9, dtype=torch.long)),
)
class TokenEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.fc = nn.Linear(16, 16)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc(self.emb(input_ids)))
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


# ----------------------------------------------------------------------------------------- attention
@pattern("multi-head attention written by hand: view with size arithmetic, permute, matmul, softmax", seq(6, 32))
class HandAttention(nn.Module):
    def __init__(self, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(32, 96)
        self.proj = nn.Linear(32, 32)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        shape = t.size()[:-1] + (self.heads, t.size(-1) // self.heads)  # noqa: RUF005 (as real code writes it)
        return t.view(shape).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = self.split(q), self.split(k), self.split(v)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.size(-1)), dim=-1)
        out = (att @ v).permute(0, 2, 1, 3).contiguous()
        return self.proj(out.view(out.size()[:-2] + (32,)))  # noqa: RUF005


@pattern("q.view(q.size()[:-1] + (4, 16)) right after a Linear", seq(5, 64))
class ViewSizeArithmetic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q(x)
        return q.view(q.size()[:-1] + (4, 16))  # noqa: RUF005


@pattern("nn.MultiheadAttention (batch_first) with a residual and LayerNorm", seq(6, 16))
class BuiltinMHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.att = nn.MultiheadAttention(16, 4, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.att(x, x, x, need_weights=False)
        return self.fc(self.norm(x + a))


@pattern("pre-norm transformer MLP block: LayerNorm, Linear, GELU, Linear, residual", seq(6, 16))
class TransformerMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.up, self.down = nn.Linear(16, 64), nn.Linear(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.gelu(self.up(self.norm(x))))


@pattern("bilinear scores: two Linears and a batched matmul with a transpose", seq(5, 12))
class BilinearScores(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(12, 8), nn.Linear(12, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.a(x), self.b(x).transpose(1, 2))


# ------------------------------------------------------------------------------------ convolution kinds
@pattern("Conv1d + BatchNorm1d + ReLU stack (audio / sensor front end)", lambda g: torch.randn(4, 4, 32, generator=g))
class Conv1dStack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(4, 8, 5, padding=2), _bn(8, 1), nn.ReLU(), nn.Conv1d(8, 8, 3, stride=2), _bn(8, 1), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pattern("Conv3d + BatchNorm3d + ReLU (video / volumes)", lambda g: torch.randn(2, 2, 4, 8, 8, generator=g))
class Conv3dBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)
        self.bn = _bn(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


@pattern("ConvTranspose2d upsampling decoder", image(4, 6))
class ConvTranspose2dDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.conv = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.relu(self.up(x)))


@pattern("ConvTranspose1d + BatchNorm1d + ReLU", lambda g: torch.randn(4, 4, 12, generator=g))
class ConvTranspose1dBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose1d(4, 6, 3, stride=2)
        self.bn = _bn(6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.up(x)))


@pattern("depthwise-separable conv with ReLU6 (MobileNet block)", image(8, 12), speed_guard=True)
class DepthwiseSeparable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn1 = _bn(8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.bn2 = _bn(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.bn2(self.pw(F.relu6(self.bn1(self.dw(x))))))


@pattern("grouped conv (groups=2) then channel shuffle with view/transpose", image(8, 8))
class GroupedShuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x))
        n, c, h, w = y.shape
        return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


@pattern("reflection pad then conv; an asymmetric zero pad then conv (TF 'same')", image(3, 11))
class PaddedConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.b = nn.Conv2d(4, 4, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.a(F.pad(x, (1, 1, 1, 1), mode="reflect")))
        return self.b(self.pad(y))


@pattern("dilated conv stack with residual add and concatenation", image(4, 12), speed_guard=True)
class DilatedResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.b = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.a(x)) + x
        return torch.cat([y, F.relu(self.b(y))], dim=1)


# ------------------------------------------------------------------------------------ activations, pools
@pattern("F.elu with alpha passed positionally (F.elu(x, True))", image(3, 8))
class EluPositional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(self.conv(x), True)


@pattern("conv, AdaptiveAvgPool2d(1), Hardtanh, then torch.mean over everything", image(3, 8))
class MeanAfterPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.act = nn.Hardtanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mean(self.act(self.pool(self.conv(x))))


@pattern("squeeze-excitation with Hardsigmoid gate and Hardswish (MobileNetV3)", image(8, 8))
class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.Hardswish()
        self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        s = self.gate(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(y, 1)))))
        return y * s


@pattern("PReLU after conv (face models)", image(3, 10))
class PReluConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.act = nn.PReLU(8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


@pattern("SiLU gating: x * sigmoid(conv(x))", image(4, 8))
class SigmoidGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


@pattern("functional clamps: torch.clamp, F.relu6, F.hardtanh with custom bounds", image(3, 8))
class FunctionalClamps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.clamp(self.a(x), -1.0, 2.0)
        return F.hardtanh(self.b(F.relu6(y)), -0.5, 0.5)


@pattern("max, average and adaptive pools mixed, then interpolate back up", image(4, 16))
class PoolsAndUpsample(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x))
        a = F.max_pool2d(y, 2)
        b = F.avg_pool2d(y, 2)
        c = F.adaptive_avg_pool2d(y, 4)
        up = F.interpolate(c, size=a.shape[-2:], mode="nearest")
        return a + b + up


@pattern("bilinear upsampling of a feature map (segmentation head)", image(3, 8))
class BilinearUpsample(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(F.relu(self.conv(x)), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.head(y)


# ------------------------------------------------------------------------------------ sequence models
@pattern("LSTM encoder with a Linear head on the last step", seq(8, 12))
class LstmHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(12, 16, batch_first=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


@pattern(
    "(B, C, T) permuted to (B, T, C) for a Linear and back (Conformer-style)",
    lambda g: torch.randn(4, 8, 10, generator=g),
)
class PermuteLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(F.relu(self.conv(x)).permute(0, 2, 1))
        return y.permute(0, 2, 1).contiguous()


@pattern("torch.where on a comparison, zeros_like and a cumulative sum", seq(6, 8))
class WhereCumsum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        y = torch.where(y > 0, y, torch.zeros_like(y))
        return torch.cumsum(y, dim=1)


@pattern(
    "an MLP classifier ending in softmax, with Dropout and Identity left in", lambda g: torch.randn(4, 20, generator=g)
)
class SoftmaxClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.3), nn.Identity(), nn.Linear(32, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)


@pattern("Linear + BatchNorm1d + ReLU tabular MLP", lambda g: torch.randn(8, 12, generator=g), speed_guard=True)
class TabularBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(12, 24), _bn(24, 1), nn.Linear(24, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.bn(self.fc1(x))))


@pattern(
    "gather with an index input (pick per-sample positions)",
    lambda g: (torch.randn(4, 6, 8, generator=g), torch.randint(0, 6, (4, 2), generator=g)),
)
class GatherIndex(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc(x))
        idx = index.unsqueeze(-1).expand(-1, -1, h.size(-1))
        return torch.gather(h, 1, idx)


@pattern(
    "a one-input classifier fed (inputs, labels) DataLoader pairs: labels must be dropped",
    lambda g: (torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g)),
)
class LabelledPairs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


def by_name(name: str) -> Pattern:
    return next(p for p in PATTERNS if p.name == name)


__all__ = ["PATTERNS", "Pattern", "by_name"]
