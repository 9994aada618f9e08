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
