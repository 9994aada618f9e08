"""What every calibration source built from a path shares: a seeded subset, batches, counts for reports."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any


class CalibrationSource:
    """A seeded subset of ``num`` samples from ``source``, yielded in batches of ``batch_size``.

    Subclasses set ``found`` (samples available) and ``used`` (read in the latest iteration), provide
    ``__iter__`` and :attr:`expected_images`, and may record unreadable samples in ``skipped``.
    """

    source: str
    num: int
    batch_size: int
    seed: int
    found: int
    used: int
    progress: Callable[[int], None] | None
    skipped: list[tuple[Any, str]]

    @property
    def expected_images(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        return math.ceil(self.expected_images / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError

    def summary(self) -> dict[str, object]:
        """Counts for reports; ``used`` and ``skipped`` describe the latest iteration."""
        return {
            "source": self.source,
            "requested": self.num,
            "found": self.found,
            "used": self.used,
            "skipped": len(getattr(self, "skipped", ())),
            "seed": self.seed,
            "batch_size": self.batch_size,
        }

    def skipped_warning(self) -> str | None:
        """One line naming unreadable samples, or None."""
        return None


__all__ = ["CalibrationSource"]
