from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
if str(ROOT) not in sys.path:  # tests.models and examples.* import from the repo root
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(2)

NO_TORCH_AO = "PTSQ_NO_TORCH_AO"
if "--no-torch-ao" in sys.argv:  # before any conftest or test module imports ptsq (tests/cli/conftest does)
    os.environ[NO_TORCH_AO] = "1"  # subprocesses (the CLI in a fresh interpreter) inherit it
if os.environ.get(NO_TORCH_AO, "") not in ("", "0"):
    from ptsq import legacy

    legacy.install()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-torch-ao",
        action="store_true",
        help="run as if torch.ao.quantization were gone (same as PTSQ_NO_TORCH_AO=1); tests marked torch_ao skip",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(NO_TORCH_AO, "") in ("", "0"):
        return
    skip = pytest.mark.skip(reason="needs torch.ao.quantization, which --no-torch-ao / PTSQ_NO_TORCH_AO hides")
    for item in items:
        if "torch_ao" in item.keywords:
            item.add_marker(skip)


def write_photos(folder: Path, n: int, size: tuple[int, int] = (96, 80), seed: int = 0, ext: str = "jpg") -> list[Path]:
    """Real image files: smooth colour fields with edges and noise, varied per file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        base = np.stack(
            [
                128 + 100 * np.sin(xx / (5 + i % 7) + rng.uniform(0, 6)),
                128 + 100 * np.cos(yy / (4 + i % 5) + rng.uniform(0, 6)),
                (xx + yy) * 255.0 / (h + w),
            ],
            axis=-1,
        )
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        p = folder / f"img_{i:03d}.{ext}"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    write_photos(d, 24)
    return d


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="module")
def one_thread():  # type: ignore[no-untyped-def]
    """Tiny models at one thread: more threads only add scheduling noise (and minutes) on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
