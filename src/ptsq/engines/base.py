"""The interface every engine implements, and the records it returns."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ptsq.config import QuantConfig


@dataclass
class LayerPrecision:
    """One layer or op of the quantized model: where it runs and, for fp32, why."""

    name: str
    op: str  # module type or function name
    precision: str  # "int8" or "fp32"
    reason: str = ""

    def to_dict(self) -> dict[str, str]:
        d = {"name": self.name, "op": self.op, "precision": self.precision}
        if self.reason:
            d["reason"] = self.reason
        return d


@dataclass
class EngineResult:
    """What an engine hands back after calibrate + convert."""

    module: torch.nn.Module  # the int8 model, runnable in this process
    precision: list[LayerPrecision]
    notes: list[str] = field(default_factory=list)  # things the user should know (fallbacks, probes)
    details: dict[str, Any] = field(default_factory=dict)  # engine-specific facts for the manifest
    debug: dict[str, Any] = field(default_factory=dict)  # in-process only (e.g. the observed model)


Batches = Iterable[tuple[Any, ...]]
Progress = Callable[[int], None]


class Engine(Protocol):
    name: str
    suffix: str  # artifact file suffix

    def quantize(
        self,
        model: torch.nn.Module,
        calibrate: Callable[[Callable[..., Any]], int],
        example_args: tuple[Any, ...],
        config: QuantConfig,
        backend: str,
    ) -> EngineResult:
        """Capture ``model``, insert observers, call ``calibrate(run_fn)``, convert; return the int8 model."""
        ...

    def save(
        self, result: EngineResult, path: Path, manifest_json: str, example_args: tuple[Any, ...]
    ) -> torch.nn.Module:
        """Write the artifact to ``path`` (a temporary name; the caller renames). Return the saved module."""
        ...

    def load(self, path: Path) -> tuple[torch.nn.Module, str]:
        """Load an artifact written by :meth:`save`: (runnable module, manifest JSON)."""
        ...

    def can_load(self, path: Path) -> bool: ...
