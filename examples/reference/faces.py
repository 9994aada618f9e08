"""MTCNN RNet and ONet (PReLU everywhere) with their real weights, and skimage's LFW faces/non-faces.

- Weights: ``facenet_pytorch/data/{rnet,onet}.pt`` from ``pip install --no-deps facenet-pytorch==2.6.0``,
  located by path: facenet_pytorch's ``__init__`` imports torchvision and pins an old torch, so it is
  never imported. The architectures are defined here and load those state_dicts strictly.
- Data: ``skimage.data.lfw_subset()`` (``pip install scikit-image``): 200 grayscale 25x25 crops, the first
  100 faces and the last 100 non-faces (background patches of the same photos).

Preprocessing that matches the weights: RGB, resize to 24x24 (RNet) or 48x48 (ONet), ``(x - 127.5) / 128``,
NCHW. In fp32 RNet separates the faces from the non-faces perfectly (AUC 1.0).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from examples.reference._assets import MissingAssetError, package_file

INSTALL_WEIGHTS = "pip install --no-deps facenet-pytorch==2.6.0"
INSTALL_FACES = "pip install scikit-image"

MEAN = 127.5
STD = 128.0
RNET_SIZE = 24
ONET_SIZE = 48


def preprocess_spec(size: int) -> dict[str, Any]:
    """Keyword arguments of ptsq.data.preprocess.Preprocess for a ``size`` x ``size`` MTCNN stage."""
    return {
        "size": (size, size),
        "crop_pct": 1.0,
        "scale": 1.0,
        "mean": (MEAN, MEAN, MEAN),
        "std": (STD, STD, STD),
        "channels": "rgb",
    }


RNET_PREPROCESS = preprocess_spec(RNET_SIZE)
ONET_PREPROCESS = preprocess_spec(ONET_SIZE)


# -------------------------------------------------------------------------------------------- models
class RNet(nn.Module):
    """MTCNN refinement net: 3x24x24 RGB -> (box regression N x 4, face probabilities N x 2).

    With ``face_only=True`` it returns only the face probabilities (column 1 = face), a single tensor.
    Parameter names match facenet-pytorch's ``rnet.pt``.
    """

    def __init__(self, face_only: bool = False) -> None:
        super().__init__()
        self.face_only = face_only
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(64 * 3 * 3, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The weights were converted from Caffe, which flattens N x W x H x C: keep that order.
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu4(self.dense4(x.flatten(1)))
        probs = self.softmax5_1(self.dense5_1(x))
        if self.face_only:
            return probs
        return self.dense5_2(x), probs


class ONet(nn.Module):
    """MTCNN output net: 3x48x48 RGB -> (box regression N x 4, landmarks N x 10, face probabilities N x 2).

    With ``face_only=True`` it returns only the face probabilities (column 1 = face), a single tensor.
    Parameter names match facenet-pytorch's ``onet.pt``.
    """

    def __init__(self, face_only: bool = False) -> None:
        super().__init__()
        self.face_only = face_only
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(128 * 3 * 3, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous()  # Caffe flattening order, as in RNet
        x = self.prelu5(self.dense5(x.flatten(1)))
        probs = self.softmax6_1(self.dense6_1(x))
        if self.face_only:
            return probs
        return self.dense6_2(x), self.dense6_3(x), probs


def _load(model: nn.Module, filename: str) -> nn.Module:
    path = package_file("facenet_pytorch", f"data/{filename}", INSTALL_WEIGHTS)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def rnet(face_only: bool = False) -> nn.Module:
    """MTCNN RNet with its pretrained weights, in eval mode (see RNet for the outputs)."""
    return _load(RNet(face_only), "rnet.pt")


def onet(face_only: bool = False) -> nn.Module:
    """MTCNN ONet with its pretrained weights, in eval mode (see ONet for the outputs)."""
    return _load(ONet(face_only), "onet.pt")


def example_inputs(size: int = RNET_SIZE, batch: int = 1) -> tuple[torch.Tensor]:
    """Inputs of the right shape and range for tracing RNet (size 24) or ONet (size 48)."""
    return (torch.rand(batch, 3, size, size) * 2 - 1,)


# ---------------------------------------------------------------------------------------------- data
@lru_cache(maxsize=1)
def _lfw() -> tuple[np.ndarray, np.ndarray]:
    try:
        from skimage import data
    except ImportError as exc:
        raise MissingAssetError("scikit-image (for lfw_subset)", INSTALL_FACES) from exc
    try:
        gray = np.asarray(data.lfw_subset())  # (200, 25, 25) float64 in [0, 1]
    except Exception as exc:  # skimage raises several types when a data file is absent
        raise MissingAssetError("skimage.data.lfw_subset()", INSTALL_FACES) from exc
    if gray.dtype != np.uint8:
        gray = np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    labels = np.repeat(np.array([1, 0], dtype=np.int64), len(gray) // 2)
    rgb.setflags(write=False)
    labels.setflags(write=False)
    return rgb, labels


def lfw_faces() -> tuple[np.ndarray, np.ndarray]:
    """skimage's LFW subset as RGB uint8 images (200 x 25 x 25 x 3) and labels (int64: 1 face, 0 non-face).

    The source is grayscale floats in [0, 1]; the gray channel is repeated into R, G and B.
    """
    return _lfw()


def preprocess(images: np.ndarray, size: int = RNET_SIZE) -> torch.Tensor:
    """RGB uint8 images (N x H x W x 3) -> float N x 3 x size x size: bilinear resize, (x - 127.5) / 128."""
    resized = [
        np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.Resampling.BILINEAR))
        for img in images
    ]
    x = torch.from_numpy(np.stack(resized).astype(np.float32))
    return x.sub_(MEAN).div_(STD).permute(0, 3, 1, 2).contiguous()


@torch.inference_mode()
def face_scores(model: nn.Module, images: np.ndarray, size: int) -> np.ndarray:
    """Face probability (float64, N) that ``model`` (RNet or ONet, either output mode) gives each image."""
    out = model(preprocess(images, size))
    probs = out if isinstance(out, torch.Tensor) else out[-1]
    return probs[:, 1].double().numpy()


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half). labels: 1 positive, 0 negative."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("roc_auc needs at least one positive and one negative label")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def rnet_auc(model: nn.Module | None = None) -> float:
    """Face/non-face ROC AUC of ``model`` (default: fp32 RNet) on the LFW subset at 24x24."""
    images, labels = lfw_faces()
    return roc_auc(face_scores(rnet() if model is None else model, images, RNET_SIZE), labels)


def onet_auc(model: nn.Module | None = None) -> float:
    """Face/non-face ROC AUC of ``model`` (default: fp32 ONet) on the LFW subset upsampled to 48x48."""
    images, labels = lfw_faces()
    return roc_auc(face_scores(onet() if model is None else model, images, ONET_SIZE), labels)


def face_accuracy(model: nn.Module | None = None, size: int = RNET_SIZE, threshold: float = 0.5) -> float:
    """Fraction of LFW crops classified right when "face" means probability >= ``threshold``."""
    if model is None:
        model = rnet() if size == RNET_SIZE else onet()
    images, labels = lfw_faces()
    predicted = face_scores(model, images, size) >= threshold
    return float((predicted == labels.astype(bool)).mean())
