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


@dataclass
class LayerTiming:
    """One int8 layer timed in the whole model (in context), against its fp32 twin on the same input."""

    name: str  # as the precision map names it
    op: str
    int8_ms: float  # its int8 kernel, in context
    fp32_ms: float  # its fp32 twin on the same (dequantized) input, plus the dequantize/quantize that adds
    input_shape: list[int]
    key: str = ""  # the engine's own handle for the layer (e.g. its module path), when it differs from name

    @property
    def ratio(self) -> float:
        return self.int8_ms / max(self.fp32_ms, 1e-6)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "int8_ms": round(self.int8_ms, 3), "fp32_ms": round(self.fp32_ms, 3),
                "ratio": round(self.ratio, 2), "input_shape": self.input_shape}  # fmt: skip


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


class SpeedHooks(Protocol):
    """What an engine may add to the whole-model speed check (``ptsq.modes.speed``); all optional.

    The check itself is engine-agnostic: it times fp32 against the saved-and-reloaded artifact. When int8
    is not fast enough it asks the engine, through these hooks, to fix what is ptsq's own, to time its
    layers in context, and to move the slow ones to fp32; then it times again. An engine without them
    gets the verdict only.
    """

    def fix_layout(self, result: EngineResult, example_args: tuple[Any, ...], threads: int) -> list[str]:
        """Fix ptsq's own slow spots in ``result.module`` in place (FX: fp32 islands' memory format); notes."""
        ...

    def layer_times(self, result: EngineResult, example_args: tuple[Any, ...], threads: int) -> list[LayerTiming]:
        """Every int8 layer that could run in fp32 instead, timed in the whole model at ``threads``."""
        ...

    def keep_fp32(self, result: EngineResult, layers: list[LayerTiming], reason: str, threads: int) -> list[str]:
        """Run ``layers`` (timed at ``threads``) in fp32 from now on (in place; precision rows updated);
        the names moved. ``reason`` may use {ratio}, {int8} and {fp32} (ms)."""
        ...
