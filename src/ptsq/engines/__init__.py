"""Quantization engines, found by name through a small registry.

An engine module registers itself with :func:`register`; adding an engine never edits the
orchestration code (``ptsq.api``) or the CLI.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from ptsq.errors import ConfigError

if TYPE_CHECKING:
    from ptsq.engines.base import Engine

# engine name -> module that registers it (imported lazily: engines pull in heavy dependencies)
_BUILTIN = {
    "fx": "ptsq.engines.fx",
    "pt2e": "ptsq.engines.pt2e",
    "onnx": "ptsq.engines.onnx",
    "openvino": "ptsq.engines.openvino",
}
# the artifact suffix each built-in engine writes (for help texts, without importing the engine)
_SUFFIX = {"fx": ".pt", "pt2e": ".pt2", "onnx": ".onnx", "openvino": ".ov"}
_REGISTRY: dict[str, Engine] = {}
# packages a built-in engine needs beyond torch (the 'engines' extra)
_REQUIRES = {"pt2e": ("torchao",), "onnx": ("onnx", "onnxruntime"), "openvino": ("openvino", "nncf")}


def register(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        from ptsq.config import add_engine

        _REGISTRY[name] = cls()
        add_engine(name)
        return cls

    return deco


def missing_packages(name: str) -> list[str]:
    """Packages engine ``name`` needs that are not installed (empty when it can run here)."""
    import importlib.util

    return [p for p in _REQUIRES.get(name, ()) if importlib.util.find_spec(p) is None]


def can_quantize(name: str) -> bool:
    """Whether engine ``name`` can quantize here: its packages are installed, and the fx engine also
    needs torch.ao.quantization (its artifacts still load without it: TorchScript runs them)."""
    from ptsq import legacy

    return not missing_packages(name) and (name != "fx" or legacy.available())


def get_engine(name: str) -> Engine:
    missing = missing_packages(name)
    if missing:
        raise ConfigError(
            f"engine {name!r} needs {', '.join(missing)}, which is not installed",
            "pip install 'ptsq[engines]' (or choose --engine fx)",
        )
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _REGISTRY:
        raise ConfigError(f"engine {name!r} is unknown", f"choose one of: {', '.join(available_engines())}")
    return _REGISTRY[name]


def available_engines() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def artifact_suffixes() -> dict[str, str]:
    """Engine name -> the artifact suffix it writes (registered engines included), for help texts."""
    return {**_SUFFIX, **{n: e.suffix for n, e in _REGISTRY.items()}}


def output_help() -> str:
    """The -o help: which suffix each engine writes."""
    each = ", ".join(f"{n}: {s}" for n, s in sorted(artifact_suffixes().items()))
    return f"Artifact file to write ({each}; auto: the chosen engine's format)."
