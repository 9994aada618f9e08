"""Latency of several models measured in one process, interleaved round by round.

Interleaving means machine drift (other load, frequency changes) hits every model alike, so the
ratios are trustworthy even when absolute times wander. Each round runs each model once, in a
rotating order; medians and p90 are reported with the speed-up of each model over the first.

Peak memory is measured apart from the timing, one model at a time, in a fresh child process
(``python -m ptsq._memprobe``) that imports torch and ptsq, loads the model and runs it a few times
at each thread count and batch size. On Linux the child resets the kernel's high-water mark
(``/proc/self/clear_refs``) before each setting's runs, so each row's ``peak_rss_mb`` is the resident
memory peak while that model ran at that setting (Python + torch included) and ``model_mb`` is that
peak minus the resident memory right after the imports (weights, activations, kernels' workspace).
Without the reset (other systems) both come from ``ru_maxrss``, whose process-wide peak is often set
by ``import torch`` itself: then rows can share one figure.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ptsq.errors import ConfigError, InputShapeError, first_line
from ptsq.fidelity import flatten_outputs
from ptsq.machine import machine_info
from ptsq.progress import task


@dataclass
class Candidate:
    """One model to time: a label, a callable, and its size on disk if known."""

    label: str
    fn: Callable[..., Any]
    size_bytes: int | None = None
    kind: str = "fp32"
    source: dict[str, Any] | None = None  # how a child process loads it again: {"artifact": path} or {"spec": ...}


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
    peak_rss_mb: float | None = None
    model_mb: float | None = None


@dataclass
class BenchResult:
    machine: dict[str, Any]
    timings: list[Timing] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "timings": [asdict(t) for t in self.timings], "memory": self.memory}


def peak_memory(
    source: dict[str, Any],
    shape: Sequence[int],
    *,
    threads: int = 1,
    runs: int = 3,
    timeout: float = 600,
    settings: Sequence[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Peak resident memory of one model in a fresh child process (see the module docstring).

    Returns ``peak_rss_mb``, ``baseline_mb`` and ``model_mb`` and, per (threads, batch size) of
    ``settings`` (default: ``threads`` and ``shape``'s batch), ``settings[i]`` with that setting's own
    ``peak_rss_mb`` and ``model_mb``; on failure the values are None and ``error`` says why (memory is a
    side figure: it never fails the benchmark).
    """
    pairs = [list(p) for p in settings] if settings else [[threads, int(shape[0])]]
    job = {**source, "shape": list(shape), "threads": threads, "runs": runs, "settings": pairs}
    out: dict[str, Any] = {"peak_rss_mb": None, "baseline_mb": None, "model_mb": None, "method": "child ru_maxrss"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ptsq._memprobe", json.dumps(job)],
            capture_output=True, text=True, timeout=timeout, cwd=os.getcwd(),
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {**out, "error": first_line(exc)}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {**out, "error": (err[-1] if err else f"exit code {proc.returncode}")[:200]}
    r = json.loads(lines[-1])
    mb = 1024.0
    per_setting = []
    for row in r.get("settings", []):
        own = row.get("hwm_kb") is not None and r.get("base_rss_kb") is not None
        peak_kb = row["hwm_kb"] if own else row["maxrss_kb"]  # without the reset, only the process-wide peak
        per_setting.append({
            "threads": row["threads"], "batch_size": row["batch_size"], "peak_rss_mb": round(peak_kb / mb, 1),
            "model_mb": round((peak_kb - (r["base_rss_kb"] if own else r["baseline_kb"])) / mb, 1),
        })  # fmt: skip
    return {
        **out,
        "settings": per_setting,
        "peak_rss_mb": round(r["peak_kb"] / mb, 1),
        "baseline_mb": round(r["baseline_kb"] / mb, 1),
        "model_mb": round((r["peak_kb"] - r["baseline_kb"]) / mb, 1),
        **(
            {"model_mb": round((r["hwm_kb"] - r["base_rss_kb"]) / mb, 1), "method": "child VmHWM after reset"}
            if r.get("hwm_kb") is not None and r.get("base_rss_kb") is not None
            else {}
        ),
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


def interleaved(
    fns: Sequence[Callable[..., Any]],
    args: tuple[Any, ...],
    *,
    warmup: int,
    runs: int,
    tick: Callable[[int], None] | None = None,
) -> list[list[float]]:
    """Milliseconds of each ``fn(*args)``, run in rounds of one call each in a rotating order.

    Machine drift (other load, frequency changes) then hits every function alike, so ratios hold even
    when absolute times wander. The first ``warmup`` rounds are not recorded.
    """
    times: list[list[float]] = [[] for _ in fns]
    for r in range(warmup + runs):
        k = r % len(fns)
        for i in list(range(k, len(fns))) + list(range(k)):  # rotate so no function always runs first
            t0 = time.perf_counter()
            fns[i](*args)
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[i].append(dt * 1000.0)
        if tick is not None:
            tick(len(fns))
    return times


def _timings(candidates: Sequence[Candidate], times: list[list[float]], threads: int, bs: int) -> list[Timing]:
    base = statistics.median(times[0])
    out = []
    for i, (c, xs) in enumerate(zip(candidates, times)):
        med = statistics.median(xs)
        out.append(
            Timing(
                label=c.label, kind=c.kind, threads=threads, batch_size=bs, median_ms=round(med, 3),
                p90_ms=round(_percentile(xs, 0.9), 3), mean_ms=round(statistics.fmean(xs), 3),
                min_ms=round(min(xs), 3), samples_per_s=round(bs * 1000.0 / med, 2),
                speedup=round(base / med, 3) if i else 1.0, size_bytes=c.size_bytes, runs=len(xs),
            )
        )  # fmt: skip
    return out


def _add_memory(
    result: BenchResult,
    candidates: Sequence[Candidate],
    args: tuple[Any, ...],
    batch_sizes: list[int],
    threads: list[int],
) -> None:
    """Peak memory of each candidate with a ``source`` at every (threads, batch size), one child process per
    candidate (see :func:`peak_memory`); each timing row gets its own setting's figure."""
    shape = tuple(args[0].shape) if args and isinstance(args[0], torch.Tensor) else None
    settings = [(t, b) for b in batch_sizes for t in threads]
    for i, c in enumerate(candidates):
        if c.source is None or shape is None:
            m: dict[str, Any] = {"peak_rss_mb": None, "model_mb": None, "error": "no source to reload from"}
        else:
            m = peak_memory(c.source, shape, threads=threads[0], settings=settings)
        rows = {(s["threads"], s["batch_size"]): s for s in m.pop("settings", [])}
        top = rows.get((threads[0], max(batch_sizes)), {})  # the per-candidate summary keeps its old meaning
        summary = {**m, **{k: top[k] for k in ("peak_rss_mb", "model_mb") if k in top}}
        result.memory.append({"label": c.label, "batch_size": max(batch_sizes), "threads": threads[0], **summary})
        for t in result.timings[i :: len(candidates)]:  # timings are appended in candidate order
            own = rows.get((t.threads, t.batch_size), {})
            t.peak_rss_mb, t.model_mb = own.get("peak_rss_mb"), own.get("model_mb")


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
    memory: bool = False,
) -> BenchResult:
    """Time every candidate at every thread count and batch size; interleaved, medians, speed-ups.

    ``memory``: afterwards, measure each candidate that has a ``source`` in a child process
    (:func:`peak_memory`) at every thread count and batch size; each timing row gets its own setting's
    peak, and ``memory`` keeps one summary per candidate (largest batch, first thread count).
    """
    if not candidates:
        raise ConfigError("nothing to benchmark", "give at least one model or artifact")
    if warmup < 0 or runs < 1:
        raise ConfigError(f"runs={runs}, warmup={warmup} are invalid", "use runs >= 1 and warmup >= 0")
    if any(t < 1 for t in threads) or any(b < 1 for b in batch_sizes):
        raise ConfigError("thread counts and batch sizes must be >= 1", "e.g. --threads 1,2 --batch-size 1,8")
    result = BenchResult(machine=machine_info())
    saved_threads = torch.get_num_threads()
    total = len(threads) * len(batch_sizes) * (warmup + runs) * len(candidates)
    try:
        with task("benchmarking", total, progress) as update, torch.inference_mode():
            done = 0

            def tick(n: int) -> None:
                nonlocal done
                done += n
                update(done)

            for bs in batch_sizes:
                args = make_inputs(bs)
                if check_outputs:
                    check_same_outputs(candidates, args)
                for nt in threads:
                    torch.set_num_threads(nt)
                    times = interleaved([c.fn for c in candidates], args, warmup=warmup, runs=runs, tick=tick)
                    result.timings.extend(_timings(candidates, times, nt, bs))
    finally:
        torch.set_num_threads(saved_threads)
    if memory:
        _add_memory(result, candidates, make_inputs(max(batch_sizes)), list(batch_sizes), list(threads))
    return result
