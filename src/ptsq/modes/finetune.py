"""A short built-in fine-tuning loop for QAT, and labelled image folders (one sub-folder per class)."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sized
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptsq.data.images import decode_image, find_images
from ptsq.data.preprocess import Preprocess
from ptsq.errors import ConfigError, DataError, first_line


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


def check_classes(model: nn.Module, example: tuple[Any, ...], classes: list[str], what: str) -> None:
    """The model's score count must equal the number of labelled classes."""
    with torch.inference_mode():
        out = model.eval()(*example)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ConfigError(
            "QAT fine-tuning needs a classifier that outputs (batch, classes) scores",
            "use ptsq.qat.prepare/convert with your own training loop for other models",
        )
    if out.shape[1] != len(classes):
        raise DataError(
            f"{what} has {len(classes)} classes but the model outputs {out.shape[1]} scores",
            f"give one sub-folder per model class ({out.shape[1]}), named so their sorted order is the class order",
        )


def finetune(
    model: nn.Module,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    epochs: int = 1,
    lr: float = 1e-4,
    progress: bool = True,
    freeze_bn_at: float = 0.3,
    freeze_observers_at: float = 0.6,
    max_steps: int | None = None,
    calibration_batches: int = 8,
) -> dict[str, Any]:
    """Fine-tune a :func:`ptsq.qat.prepare` model with SGD (momentum 0.9) and cross-entropy.

    ``data`` is re-iterable (a DataLoader) yielding ``(inputs, labels)``; its ``len`` sets the
    schedule. The first ``calibration_batches`` batches first set the quantization ranges in eval mode
    (:func:`ptsq.qat.calibrate`), so training starts from the PTQ model rather than from ranges seen on
    one train-mode batch. The learning rate decays from ``lr`` to 0 on a cosine over the steps, so the
    last steps settle on the fixed grids instead of jumping between rounding levels. Returns the
    loss/accuracy history per epoch.
    """
    from ptsq.qat import Schedule, calibrate

    if epochs < 1 or lr <= 0:
        raise ConfigError(f"epochs={epochs}, lr={lr} are invalid", "use --epochs >= 1 and --lr > 0, e.g. 1e-4")
    if calibration_batches < 0:
        raise ConfigError(f"calibration_batches={calibration_batches} is negative", "use 0 to skip, e.g. 8")
    per_epoch = len(data) if isinstance(data, Sized) else None
    if per_epoch is None and max_steps is None:
        raise ConfigError("fine-tuning data has no length", "pass a DataLoader or max_steps")
    total = min(x for x in (per_epoch * epochs if per_epoch else None, max_steps) if x is not None)
    schedule = Schedule(total, freeze_bn_at=freeze_bn_at, freeze_observers_at=freeze_observers_at)
    calibrated = calibrate(model, data, max_batches=calibration_batches) if calibration_batches else 0
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    cosine = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total)))
    loss_fn = nn.CrossEntropyLoss()
    history: list[dict[str, float]] = []
    step = 0
    model.train()
    with _bar(total, progress) as update:
        for epoch in range(epochs):
            seen = correct = 0
            loss_sum = 0.0
            for x, y in data:
                if step >= total:
                    break
                schedule.step(model, step)
                try:
                    logits = model(x)
                    loss = loss_fn(logits, y)
                except Exception as exc:
                    raise DataError(
                        f"a training batch failed in the model: {first_line(exc)}", "check --train-data"
                    ) from None
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                cosine.step()
                step += 1
                seen += len(y)
                correct += int((logits.argmax(1) == y).sum())
                loss_sum += float(loss.detach()) * len(y)
                update(step, f"epoch {epoch + 1}/{epochs} loss {loss_sum / seen:.3f} acc {correct / seen:.3f}")
            if seen:
                history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "accuracy": correct / seen})
    model.eval()
    return {"steps": step, "epochs": history, "lr": lr, "lr_schedule": "cosine", "freeze_bn_at": freeze_bn_at,
            "freeze_observers_at": freeze_observers_at, "calibration_batches": calibrated}  # fmt: skip


class _bar:
    """A rich progress bar on stderr whose description carries loss and accuracy."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda _step, _text: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        cols = [TextColumn("QAT {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        self.progress = Progress(*cols, console=Console(file=sys.stderr), transient=True)
        self.progress.__enter__()
        tid = self.progress.add_task("", total=self.total)
        return lambda step, text: self.progress.update(tid, completed=step, description=text)

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)
