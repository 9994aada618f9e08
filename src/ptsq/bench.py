"""Latency of several models measured in one process, interleaved round by round.

Interleaving means machine drift (other load, frequency changes) hits every model alike, so the
ratios are trustworthy even when absolute times wander. Each round runs each model once, in a
rotating order; medians and p90 are reported with the speed-up of each model over the first.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ptsq.errors import ConfigError, InputShapeError, first_line
from ptsq.fidelity import flatten_outputs
from ptsq.progress import task


@dataclass
class Candidate:
    """One model to time: a label, a callable, and its size on disk if known."""

    label: str
    fn: Callable[..., Any]
    size_bytes: int | None = None
    kind: str = "fp32"


@dataclass
class Timing:
    label: str
    kind: str
    threads: int
    batch_size: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    samples_per_s: float
    speedup: float | None
    size_bytes: int | None
    runs: int


@dataclass
class BenchResult:
    machine: dict[str, Any]
    timings: list[Timing] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "timings": [asdict(t) for t in self.timings]}


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def machine_info() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = _cpu_flags()
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "neon", "asimd") if f in flags]
    return {
        "cpu": model,
        "isa": isa,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "quantized_engine": torch.backends.quantized.engine,
    }


def _percentile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def check_same_outputs(cands: Sequence[Candidate], args: tuple[Any, ...]) -> None:
    """Refuse to compare models whose outputs differ in shape (they are not the same model)."""
    shapes = []
    for c in cands:
        try:
            with torch.inference_mode():
                out = c.fn(*args)
        except Exception as exc:
            msg = first_line(exc)
            raise InputShapeError(
                f"'{c.label}' rejects inputs of shape {[tuple(a.shape) for a in args]}: {msg}",
                "pass --input-size matching the models",
            ) from None
        shapes.append([tuple(t.shape) for t in flatten_outputs(out)])
    for c, s in zip(cands[1:], shapes[1:]):
        if s != shapes[0]:
            raise ConfigError(
                f"'{c.label}' outputs shapes {s} but '{cands[0].label}' outputs {shapes[0]}",
                "compare versions of the same model, or pass --allow-different-outputs",
            )


def benchmark(
    candidates: Sequence[Candidate],
    make_inputs: Callable[[int], tuple[Any, ...]],
    *,
    threads: Sequence[int] = (1,),
    batch_sizes: Sequence[int] = (1,),
    warmup: int = 10,
    runs: int = 50,
    check_outputs: bool = True,
    progress: bool = True,
) -> BenchResult:
    """Time every candidate at every thread count and batch size; interleaved, medians, speed-ups."""
    if not candidates:
        raise ConfigError("nothing to benchmark", "give at least one model or artifact")
    if warmup < 0 or runs < 1:
        raise ConfigError(f"runs={runs}, warmup={warmup} are invalid", "use runs >= 1 and warmup >= 0")
    if any(t < 1 for t in threads) or any(b < 1 for b in batch_sizes):
        raise ConfigError("thread counts and batch sizes must be >= 1", "e.g. --threads 1,2 --batch-size 1,8")
    result = BenchResult(machine=machine_info())
    saved_threads = torch.get_num_threads()
    total = len(threads) * len(batch_sizes) * (warmup + runs) * len(candidates)
    done = 0
    try:
        with task("benchmarking", total, progress) as update, torch.inference_mode():
            for bs in batch_sizes:
                args = make_inputs(bs)
                if check_outputs:
                    check_same_outputs(candidates, args)
                for nt in threads:
                    torch.set_num_threads(nt)
                    times: dict[int, list[float]] = {i: [] for i in range(len(candidates))}
                    for r in range(warmup + runs):
                        order = list(range(len(candidates)))
                        k = r % len(order)
                        order = order[k:] + order[:k]  # rotate so no model always runs first
                        for i in order:
                            t0 = time.perf_counter()
                            candidates[i].fn(*args)
                            dt = time.perf_counter() - t0
                            if r >= warmup:
                                times[i].append(dt * 1000.0)
                            done += 1
                        update(done)
                    base = statistics.median(times[0])
                    for i, c in enumerate(candidates):
                        xs = times[i]
                        med = statistics.median(xs)
                        result.timings.append(
                            Timing(
                                label=c.label,
                                kind=c.kind,
                                threads=nt,
                                batch_size=bs,
                                median_ms=round(med, 3),
                                p90_ms=round(_percentile(xs, 0.9), 3),
                                mean_ms=round(statistics.fmean(xs), 3),
                                min_ms=round(min(xs), 3),
                                samples_per_s=round(bs * 1000.0 / med, 2),
                                speedup=round(base / med, 3) if i else 1.0,
                                size_bytes=c.size_bytes,
                                runs=len(xs),
                            )
                        )
    finally:
        torch.set_num_threads(saved_threads)
    return result
