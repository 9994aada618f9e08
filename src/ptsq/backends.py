"""Quantized backends: which kernels the int8 model runs on, and the matching torch engine."""

from __future__ import annotations

import platform

import torch

from ptsq.errors import BackendError

# ptsq name -> (torch.backends.quantized.engine, qconfig-mapping name, what it is)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "x86": ("x86", "x86", "x86 CPUs: fbgemm and oneDNN kernels chosen per op"),
    "fbgemm": ("fbgemm", "fbgemm", "x86 CPUs, fbgemm kernels"),
    "onednn": ("onednn", "onednn", "x86 CPUs, oneDNN kernels"),
    "qnnpack": ("qnnpack", "qnnpack", "ARM CPUs (and mobile), QNNPACK kernels"),
}


def supported_backends() -> list[str]:
    engines = set(torch.backends.quantized.supported_engines)
    return [name for name, (engine, _, _) in BACKENDS.items() if engine in engines]


def resolve_backend(name: str = "auto") -> str:
    """Return a concrete backend name for ``name`` ("auto" picks by CPU architecture).

    Raises BackendError naming the supported backends when ``name`` is unknown or not built in.
    """
    key = (name or "auto").lower()
    supported = supported_backends()
    if key == "auto":
        arch = platform.machine().lower()
        prefer = ["qnnpack"] if arch in ("arm64", "aarch64", "armv7l", "armv8l") else ["x86", "fbgemm", "onednn"]
        for cand in prefer + supported:
            if cand in supported:
                return cand
        raise BackendError(
            "this PyTorch build has no quantized CPU backend",
            "install a standard CPU or CUDA build of PyTorch (pip install torch)",
        )
    if key not in BACKENDS:
        raise BackendError(
            f"unknown backend {name!r}",
            f"choose one of: auto, {', '.join(supported)}",
        )
    if key not in supported:
        raise BackendError(
            f"backend {key!r} is not supported by this PyTorch build ({torch.__version__})",
            f"choose one of: auto, {', '.join(supported)}",
        )
    return key


def activate(backend: str) -> str:
    """Set ``torch.backends.quantized.engine`` for ``backend`` and return the engine name."""
    engine = BACKENDS[backend][0]
    if torch.backends.quantized.engine != engine:
        torch.backends.quantized.engine = engine
    return engine


def qconfig_name(backend: str) -> str:
    return BACKENDS[backend][1]
