"""Labelled image folders: ``root/<class>/<image>``, classes in sorted sub-folder order (for QAT training)."""

from __future__ import annotations

from pathlib import Path

import torch

from ptsq.data.images import decode_image, find_images
from ptsq.data.preprocess import Preprocess
from ptsq.errors import DataError


class LabelledFolder(torch.utils.data.Dataset):
    """``root/<class>/<image>``: classes are the sorted sub-folder names, label = index in that order."""

    def __init__(self, root: str | Path, pre: Preprocess, *, max_images: int | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(
                f"labelled data folder '{root}' does not exist", "pass --train-data DIR with one sub-folder per class"
            )
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise DataError(
                f"'{root}' has no class sub-folders, so its images carry no labels",
                "put each class's images in its own sub-folder: DIR/<class>/<image>",
            )
        self.items: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            try:
                paths = find_images(root / name, max_images=max_images, what=f"class folder '{name}'")
            except DataError:
                paths = []
            self.items.extend((p, label) for p in paths)
        if not self.items:
            raise DataError(f"the class sub-folders of '{root}' contain no images", "add labelled images")
        self.pre = pre

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        return decode_image(path, self.pre), label


__all__ = ["LabelledFolder"]
