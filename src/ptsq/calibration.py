"""Feed calibration batches to an observed model, holding a few back for the self-check.

Accepts any iterable of batches: a tensor, a tuple/list of positional inputs, or a DataLoader's
``(inputs, labels)`` pair (the integer labels are dropped). Batches are streamed, never collected.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from ptsq.errors import DataError

Transform = Callable[[Any], Any]


def as_args(batch: Any) -> tuple[Any, ...]:
    """Turn one calibration batch into positional model inputs."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, dict):
        raise DataError(
            "calibration batches are dicts, but ptsq passes inputs positionally",
            "pass transform=lambda b: (b['input'],) to say which entries are the model inputs",
        )
    if isinstance(batch, (list, tuple)):
        items = tuple(batch)
        if (
            len(items) == 2
            and isinstance(items[1], torch.Tensor)
            and not items[1].is_floating_point()
            and items[1].dim() <= 1
        ):
            return (items[0],)  # (inputs, labels) from a labelled DataLoader
        return items
    raise DataError(
        f"a calibration batch is a {type(batch).__name__}, not a tensor or a tuple of tensors",
        "yield tensors (N, C, H, W) from the calibration iterable, or pass a transform",
    )


def batch_size(args: tuple[Any, ...]) -> int:
    for a in args:
        if isinstance(a, torch.Tensor) and a.dim() > 0:
            return int(a.shape[0])
    return 1


def check_finite(args: tuple[Any, ...], index: int) -> None:
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point() and not bool(torch.isfinite(a).all()):
            raise DataError(
                f"calibration batch {index} contains NaN or infinite values",
                "clean the calibration data (observers would record a meaningless range)",
            )


def first_sample(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a[:1] if isinstance(a, torch.Tensor) and a.dim() > 0 else a for a in args)


class CalibrationStream:
    """Iterate batches once: peek the first, calibrate on all but the last ``hold_back``."""

    def __init__(
        self,
        source: Iterable[Any],
        *,
        transform: Transform | None = None,
        hold_back: int = 2,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        if isinstance(source, (torch.Tensor, str, bytes)):
            raise DataError(
                f"calibration data must be an iterable of batches, not a single {type(source).__name__}",
                "pass a list of tensors, a DataLoader, or ptsq.data.CalibrationImages(folder, preprocess)",
            )
        try:
            self._it: Iterator[Any] = iter(source)
        except TypeError:
            raise DataError(
                f"calibration data of type {type(source).__name__} is not iterable",
                "pass a list of tensors, a DataLoader, or ptsq.data.CalibrationImages(folder, preprocess)",
            ) from None
        self._transform = transform
        self._progress = progress
        try:
            n = len(source)  # type: ignore[arg-type]
        except TypeError:
            n = None
        # keep at least one batch for calibration when the source is short
        if n is not None:
            hold_back = min(hold_back, max(1, n // 4)) if n >= 2 else 0
        self.hold_back = max(0, hold_back)
        self._index = 0
        self.first = self._next()
        if self.first is None:
            raise DataError("the calibration data is empty", "give at least one batch of inputs")
        self.held: list[tuple[Any, ...]] = []
        self.calibrated_samples = 0
        self.calibrated_batches = 0

    def _next(self) -> tuple[Any, ...] | None:
        try:
            batch = next(self._it)
        except StopIteration:
            return None
        args = as_args(self._transform(batch) if self._transform else batch)
        check_finite(args, self._index)
        self._index += 1
        return args

    def run(self, fn: Callable[..., Any]) -> int:
        """Call ``fn(*args)`` for each calibration batch; return the number of samples seen."""
        window: deque[tuple[Any, ...]] = deque()
        batch: tuple[Any, ...] | None = self.first
        while batch is not None:
            window.append(batch)
            if len(window) > self.hold_back:
                self._feed(fn, window.popleft())
            batch = self._next()
        self.held = list(window)
        if self.calibrated_batches == 0 and self.held:  # too little data to hold any back
            for args in self.held:
                self._feed(fn, args)
            self.in_sample_check = True
        else:
            self.in_sample_check = False
        return self.calibrated_samples

    def _feed(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        fn(*args)
        self.calibrated_samples += batch_size(args)
        self.calibrated_batches += 1
        if self._progress is not None:
            self._progress(self.calibrated_samples)
