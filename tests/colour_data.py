"""Image files whose class a test controls: the brightest channel (0 red, 1 green, 2 blue), for ColourNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {0: (210, 30, 40), 1: (35, 200, 30), 2: (30, 45, 205)}
NAMES = {0: "a_red", 1: "b_green", 2: "c_blue"}


def colour_image(path: Path, cls: int, rng: np.random.Generator, size: tuple[int, int] = (20, 24)) -> Path:
    arr = np.clip(np.array(COLOURS[cls]) + rng.normal(0, 15, (*size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def class_folders(root: Path, per_class: int = 4, seed: int = 0, names: dict[int, str] | None = None) -> Path:
    """root/<class name>/img_i.png with the colour of its class (ImageFolder layout)."""
    rng = np.random.default_rng(seed)
    for c, name in (names or NAMES).items():
        for i in range(per_class):
            colour_image(root / name / f"img_{i}.png", c, rng)
    return root


def flat_labelled(root: Path, per_class: int = 4, seed: int = 1) -> Path:
    """root/photo_<n>_<class>.png: the class index is in the file name."""
    rng = np.random.default_rng(seed)
    n = 0
    for c in COLOURS:
        for _ in range(per_class):
            colour_image(root / f"photo_{n}_{c}.png", c, rng)
            n += 1
    return root
