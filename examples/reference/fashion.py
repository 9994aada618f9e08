"""A small ResNet trained on the complete Fashion-MNIST, and that data set read from Debian's package.

The network (``FashionResNet``) is Conv+BN+ReLU throughout, with residual adds, stride-2 projection
shortcuts, global average pooling and one Linear: an int8-friendly classifier with a real 10k-image test
set. ``train_fashion.py`` beside this file trains it; the weights and a JSON with the fp32 test top-1
live in ``weights/``.

Data: ``apt-get install -y dataset-fashion-mnist`` (gzip IDX files, 60k train + 10k test, 28x28 uint8).
Preprocessing: ``x / 255`` then ``(x - 0.2860) / 0.3530``, one channel, NCHW.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from examples.reference._assets import data_file

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL = "apt-get update && apt-get install -y dataset-fashion-mnist"
WEIGHTS = Path(__file__).resolve().parent / "weights" / "fashion_resnet.pt"
METRICS = WEIGHTS.with_suffix(".json")

CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
MEAN = 0.2860
STD = 0.3530
# Keyword arguments of ptsq.data.preprocess.Preprocess that reproduce preprocess() on a 28x28 image.
PREPROCESS: dict[str, Any] = {
    "size": (28, 28),
    "crop_pct": 1.0,
    "scale": 1.0 / 255.0,
    "mean": (MEAN,),
    "std": (STD,),
    "channels": "gray",
}


# --------------------------------------------------------------------------------------------- model
class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class BasicBlock(nn.Module):
    """Two 3x3 Conv+BN, a residual add (1x1 Conv+BN projection when the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class FashionResNet(nn.Module):
    """28x28x1 -> stem (28x28) -> stages at 14x14, 7x7, 4x4 -> global avg pool -> Linear(10)."""

    def __init__(self, widths: tuple[int, int, int, int] = (16, 24, 48, 96), num_classes: int = 10) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.widths = widths
        self.stem = ConvBNReLU(1, w0)
        self.layer1 = nn.Sequential(BasicBlock(w0, w1, stride=2), BasicBlock(w1, w1))
        self.layer2 = nn.Sequential(BasicBlock(w1, w2, stride=2), BasicBlock(w2, w2))
        self.layer3 = BasicBlock(w2, w3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def example_inputs(batch: int = 1) -> tuple[torch.Tensor]:
    """Inputs of the right shape and scale for tracing FashionResNet."""
    return (torch.randn(batch, 1, 28, 28),)


def fashion_net(weights: Path | str | None = None) -> nn.Module:
    """The trained FashionResNet in eval mode (default weights: ``weights/fashion_resnet.pt``)."""
    path = Path(weights) if weights is not None else WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {str(path)!r} does not exist; train it with "
            "`python -m examples.reference.train_fashion` from the repository root"
        )
    model = FashionResNet()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def recorded_metrics() -> dict[str, Any]:
    """The JSON written next to the weights by the training script (fp32 test top-1, epochs, seed ...)."""
    return json.loads(METRICS.read_text())


# ---------------------------------------------------------------------------------------------- data
def read_idx(path: Path | str) -> np.ndarray:
    """Read one (optionally gzipped) IDX file into a numpy array of its stored dtype and shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{str(path)!r} is not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError(f"{str(path)!r} has unknown IDX element type 0x{raw[2]:02x}")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(dtypes[raw[2]])
    count = int(np.prod(shape))
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=4 + 4 * ndim)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


@lru_cache(maxsize=2)
def _split(split: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(data_file(DATA_DIR / f"{split}-images-idx3-ubyte.gz", INSTALL))
    labels = read_idx(data_file(DATA_DIR / f"{split}-labels-idx1-ubyte.gz", INSTALL)).astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def fashion_test() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 test images (uint8, N x 28 x 28) and labels (int64, 0-9; names in CLASSES)."""
    return _split("t10k")


def fashion_train() -> tuple[np.ndarray, np.ndarray]:
    """The 60,000 training images (uint8, N x 28 x 28) and labels (int64)."""
    return _split("train")


def fashion_train_subset(n: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` training images and labels drawn without replacement, reproducibly (e.g. for calibration)."""
    images, labels = fashion_train()
    if not 0 < n <= len(images):
        raise ValueError(f"n={n} must be between 1 and {len(images)}")
    index = np.sort(np.random.default_rng(seed).choice(len(images), size=n, replace=False))
    return images[index], labels[index]


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N x 28 x 28) -> float tensor N x 1 x 28 x 28, normalised like the training data."""
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0)
    return x.sub_(MEAN).div_(STD).unsqueeze(1)


@torch.inference_mode()
def fashion_accuracy(model: nn.Module | None = None, n: int | None = None, batch_size: int = 500) -> float:
    """Top-1 of ``model`` (default: the trained fp32 net) on the first ``n`` test images (default all)."""
    model = fashion_net() if model is None else model
    images, labels = fashion_test()
    if n is not None:
        images, labels = images[:n], labels[:n]
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(preprocess(images[start : start + batch_size]))
        correct += int((logits.argmax(1).numpy() == labels[start : start + batch_size]).sum())
    return correct / len(images)
