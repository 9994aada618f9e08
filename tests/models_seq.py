"""Tiny sequence models for dynamic-mode tests: Linear-heavy and LSTM/GRU, with ``example_inputs()``."""

from __future__ import annotations

import torch
from torch import nn


class TokenMLP(nn.Module):
    """A transformer-style feed-forward block over (batch, tokens, features): Linear-GELU-Linear + LayerNorm."""

    def __init__(self, d: int = 32, hidden: int = 64, num_classes: int = 5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, hidden)
        self.act = nn.GELU()
        self.down = nn.Linear(hidden, d)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.down(self.act(self.up(self.norm(x))))
        return self.head(y.mean(1))

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(0)),)


class SeqLSTM(nn.Module):
    """A sequence classifier: 2-layer LSTM over (batch, time, features), last step -> Linear."""

    def __init__(self, features: int = 16, hidden: int = 32, num_classes: int = 4) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(2, 20, 16, generator=torch.Generator().manual_seed(0)),)


class SeqGRU(SeqLSTM):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.GRU(16, 32, batch_first=True)  # type: ignore[assignment]


class ConvOnly(nn.Module):
    """No layer dynamic quantization supports."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv(x))).flatten(1)


class DigitNet(nn.Module):
    """A tiny conv classifier for 8x8 grayscale digits (scikit-learn's real ``load_digits``), 3 classes."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def digits(classes: int = 3, per_class: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Real 8x8 digit images (N, 1, 8, 8) scaled to [0, 1], and labels 0..classes-1."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = [], []
    for c in range(classes):
        idx = (d.target == c).nonzero()[0][:per_class]
        x.append(torch.tensor(d.images[idx], dtype=torch.float32) / 16.0)
        y.append(torch.full((len(idx),), c, dtype=torch.long))
    return torch.cat(x).unsqueeze(1), torch.cat(y)


def write_digit_folder(root, classes: int = 3, per_class: int = 12):  # type: ignore[no-untyped-def]
    """``root/<digit>/<i>.png``: real scikit-learn digits as 8x8 grayscale PNG files."""
    from PIL import Image

    x, y = digits(classes, per_class)
    for i, (img, label) in enumerate(zip(x, y)):
        folder = root / f"digit{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0].numpy() * 255).astype("uint8"), mode="L").save(folder / f"{i}.png")
    return root


class TinyEncoder(nn.Module):
    """One pre-norm transformer block (fused qkv Linear, attention by matmul, GELU MLP) + a Linear head."""

    def __init__(self, d: int = 32, heads: int = 4, num_classes: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(self.ln1(x)).chunk(3, -1))
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, -1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        x = x + self.down(nn.functional.gelu(self.up(self.ln2(x))))
        return self.head(x.mean(1))

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(0)),)


class TextEncoder(nn.Module):
    """A sentence encoder with a tokenizer's inputs: embedding, Linear-GELU-Linear, masked mean pooling."""

    def __init__(self, vocab: int = 64, d: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab, d)
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.emb(input_ids)
        h = h + self.down(nn.functional.gelu(self.up(h)))
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)
