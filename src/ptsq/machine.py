"""Facts about this machine that change what is fast or exact: CPU model, instruction sets, thread count."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), which can be fewer than the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_per_core() -> float | None:
    """The 1-minute load average per usable core (above 1: other work competes for every core)."""
    try:
        return round(os.getloadavg()[0] / usable_cores(), 2)
    except OSError:
        return None


def has_vnni() -> bool:
    """Whether this CPU has VNNI (u8 x s8 dot products without 16-bit saturation)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def machine_info() -> dict[str, Any]:
    import torch

    flags = cpu_flags()
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "neon", "asimd") if f in flags]
    return {
        "cpu": cpu_model(),
        "isa": isa,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "quantized_engine": torch.backends.quantized.engine,
    }


__all__ = ["cpu_flags", "cpu_model", "has_vnni", "machine_info"]
