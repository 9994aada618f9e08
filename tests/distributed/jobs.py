"""Jobs for the fan-out tests: they run in Ray worker processes (the tests package is shipped to them)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def work(kind: str, x: int, marker: str = "") -> int:
    """x squared, after misbehaving as ``kind`` says."""
    if kind == "raise":
        raise ValueError(f"job {x} refuses")
    if kind == "kill-always" or (kind == "kill-once" and not Path(marker).exists()):
        if marker:
            Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":
        time.sleep(3600)
    return x * x


def faults_per_forward(model: object, passes: int) -> float:
    """Minor page faults per forward pass of ``model`` on a batch of 32 28x28 images, after a warm-up."""
    import resource

    import torch

    x = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for _ in range(5):
            model(x)  # type: ignore[operator]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(passes):
            model(x)  # type: ignore[operator]
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / passes
