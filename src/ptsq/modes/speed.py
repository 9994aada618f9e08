"""Whole-model speed check: is the int8 model, as it will be deployed, faster than fp32 where it will run?

After convert, the int8 result is saved and loaded back exactly as a user will load it (the TorchScript
file for FX, the onnxruntime session for ONNX, ...), and timed against the fp32 model on a real input at
batch 1, at every thread count in ``speed.threads`` (default 1), interleaved round by round.

The verdict is robust to load: at one thread it is the ratio of the *minimum process CPU time* over the
runs (time other processes take is not counted; runtimes that compute on their own worker thread, such
as OpenVINO's, are), at several threads the ratio of the minimum wall-clock time (other processes can
only add time, so the fastest run is the closest to the models' own cost).

When int8 is not fast enough, the engine's hooks (:class:`ptsq.engines.base.SpeedHooks`) get a bounded
number of rounds: fix what is ptsq's own (FX: fp32 islands' memory format), time each int8 layer *in
the model* against its fp32 twin, move the slow ones to fp32, then save, reload and time again. A round
that does not help is undone. If int8 still cannot win, the result says so (``verdict: "slower"``), the
API warns (:class:`~ptsq.errors.SpeedWarning`) and the CLI exits with code 3 unless ``--allow-slower``.
"""

from __future__ import annotations

import copy
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptsq.config import QuantConfig
from ptsq.engines.base import EngineResult, LayerTiming
from ptsq.errors import ConfigError, InputShapeError, PtsqError, SpeedWarning, first_line
from ptsq.machine import load_per_core, usable_cores
from ptsq.progress import task

MIN_RUNS = 5  # at least this many interleaved rounds, however long a run takes
BUDGET_S = 20.0  # then stop once a timing has taken this long
IN_CONTEXT_MARGIN = 1.2  # move a layer to fp32 when its int8 kernel is this much slower in the model ...
MIN_SAVING = 0.005  # ... and that saves at least this share of the int8 model's time
FP32_REFERENCE = "torch eager fp32 (the model as given)"
REASON = "int8 {ratio:.1f}x slower than fp32 inside the model ({int8:.2f} vs {fp32:.2f} ms), kept in fp32"


@dataclass
class Pair:
    """fp32 against int8 at one thread count."""

    threads: int
    fp32_ms: float
    int8_ms: float
    fp32_wall_ms: float
    int8_wall_ms: float
    runs: int

    @property
    def speedup(self) -> float:
        return self.fp32_ms / max(self.int8_ms, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads, "fp32_ms": round(self.fp32_ms, 3), "int8_ms": round(self.int8_ms, 3),
            "speedup": round(self.speedup, 3), "fp32_wall_ms": round(self.fp32_wall_ms, 3),
            "int8_wall_ms": round(self.int8_wall_ms, 3), "runs": self.runs,
        }  # fmt: skip


def method(threads: int) -> str:
    return "minimum process CPU time" if threads == 1 else "minimum wall-clock time"


def check_threads(threads: tuple[int, ...]) -> None:
    """Thread counts this process can really use; more would time contention, not the model."""
    cores = usable_cores()
    over = [t for t in threads if t > cores]
    if over:
        raise ConfigError(
            f"--threads {over[0]} is more than the {cores} core(s) this process may use",
            f"time at the thread counts the model will run at, each from 1 to {cores} (e.g. --threads 1)",
        )


def _shape(args: tuple[Any, ...]) -> str:
    return ", ".join(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor)) or "?"


def time_pair(fp32: Any, int8: Any, args: tuple[Any, ...], threads: int, runs: int, tick: Any = None) -> Pair:
    """fp32 and int8 interleaved at ``threads`` (each round in alternating order); minimum times."""
    saved = torch.get_num_threads()
    cpu = time.process_time if threads == 1 else time.perf_counter
    try:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            for label, fn in (("fp32", fp32), ("int8", int8)):
                try:
                    fn(*args)
                except Exception as exc:
                    raise InputShapeError(
                        f"the {label} model fails when timed at {threads} thread(s) on inputs {_shape(args)}: "
                        f"{first_line(exc)}",
                        "time it at thread counts and input shapes it accepts (--threads, --input-size)",
                    ) from None
            fns = (fp32, int8)
            best, wall = [float("inf")] * 2, [float("inf")] * 2
            start, done = time.perf_counter(), 0
            for r in range(runs):
                for i in (0, 1) if r % 2 == 0 else (1, 0):
                    c0, w0 = cpu(), time.perf_counter()
                    fns[i](*args)
                    wall[i] = min(wall[i], time.perf_counter() - w0)
                    best[i] = min(best[i], cpu() - c0)
                done += 1
                if tick is not None:
                    tick()
                if done >= MIN_RUNS and time.perf_counter() - start > BUDGET_S:
                    break
    finally:
        torch.set_num_threads(saved)
    return Pair(threads, best[0] * 1e3, best[1] * 1e3, wall[0] * 1e3, wall[1] * 1e3, done)


def _has_hooks(engine: Any) -> bool:
    return all(callable(getattr(engine, h, None)) for h in ("fix_layout", "layer_times", "keep_fp32"))


def _reload(engine: Any, result: EngineResult, example: tuple[Any, ...], folder: Path, n: int) -> nn.Module | None:
    """The int8 model as a user gets it: saved with the engine's own format, loaded back (or what the engine
    says runs the same, ``engine.deployed(result)``; None: nothing deployable can be timed here)."""
    if callable(getattr(engine, "deployed", None)):
        return engine.deployed(result)
    path = folder / f"round{n}{engine.suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine.save(result, path, "{}", example)
        module, _ = engine.load(path)
    return module


def _slow(timings: list[LayerTiming], whole_ms: float) -> list[LayerTiming]:
    return [t for t in timings if t.ratio > IN_CONTEXT_MARGIN and t.int8_ms - t.fp32_ms >= MIN_SAVING * whole_ms]


def check_speed(
    fp32: nn.Module,
    engine: Any,
    result: EngineResult,
    example: tuple[Any, ...],
    config: QuantConfig,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Time fp32 against the deployed int8 model, improve it through the engine's hooks; the report.

    ``result`` may be changed in place (layers moved to fp32, islands re-laid out); a round that made the
    model slower is undone. The report holds the verdict (``faster``, ``slower`` or ``not checked``),
    the speed-up per thread count, how it was measured and what each round changed.
    """
    opts = config.speed
    report: dict[str, Any] = {
        "verdict": "not checked", "threads": list(opts.threads), "min_speedup": opts.min_speedup,
        "fp32": FP32_REFERENCE, "int8": f"the saved {engine.name} artifact, loaded back", "batch_size": 1,
        "input": _shape(example), "method": {str(t): method(t) for t in opts.threads}, "rounds": [], "changes": [],
    }  # fmt: skip
    if not opts.check:
        return report  # nothing measured: the report stays the same from run to run
    report["load_per_core"] = load_per_core()
    may_change = _has_hooks(engine) and config.speed_guard > 0  # --speed-guard 0: the choice is fixed
    before: tuple[float, Any] | None = None  # the speed-up before the last change, and the state to go back to
    total = (opts.rounds + 1) * len(opts.threads) * opts.runs
    with tempfile.TemporaryDirectory(prefix="ptsq-speed-") as d, task("checking speed", total, progress) as update:
        count = 0

        def tick() -> None:
            nonlocal count
            count += 1
            update(count)

        for rnd in range(opts.rounds + 1):
            try:
                deployed = _reload(engine, result, example, Path(d), rnd)
            except PtsqError as exc:  # saving will say so again, where the artifact is written
                report["why"] = f"the artifact cannot be saved, so it cannot be timed: {exc.message}"
                deployed = None
            if deployed is None:
                report.setdefault("why", f"the {engine.name} engine has no deployable form to time (see its options)")
                if rnd:  # a later round broke saving: back to the last state that saved
                    result.module, result.precision, result.notes = before[1]  # type: ignore[index]
                    report["changes"].append(f"round {rnd}: its changes could not be saved; undone")
                    report.pop("why")
                    break
                return report
            pairs = [time_pair(fp32, deployed, example, t, opts.runs, tick) for t in opts.threads]
            worst = min(pairs, key=lambda p: p.speedup)
            report["rounds"].append({"pairs": [p.to_dict() for p in pairs]})
            if before is not None and worst.speedup <= before[0]:  # the last change did not help: undo it
                result.module, result.precision, result.notes = before[1]
                report["rounds"][-1]["undone"] = True
                report["changes"].append(f"round {rnd}: its changes made int8 no faster; undone")
                break
            report["pairs"] = [p.to_dict() for p in pairs]
            if worst.speedup >= opts.min_speedup or not may_change or rnd == opts.rounds:
                break
            timings = engine.layer_times(result, example, worst.threads)
            slow = _slow(timings, worst.int8_ms)
            report["rounds"][-1]["slow_layers"] = [t.to_dict() for t in sorted(slow, key=lambda t: -t.int8_ms)[:10]]
            if not slow:
                break
            before = (
                worst.speedup,
                (copy.deepcopy(result.module), copy.deepcopy(result.precision), list(result.notes)),
            )
            moved = engine.keep_fp32(result, slow, REASON, worst.threads)
            shown = ", ".join(moved[:5]) + (" …" if len(moved) > 5 else "")
            change = f"round {rnd + 1}: {len(moved)} layer(s) slower in int8 inside the model moved to fp32 ({shown})"
            report["changes"].append(change)
            result.notes.append(f"speed check: {change}")
            report["changes"] += engine.fix_layout(result, example, worst.threads)
    return settle(report, report.get("pairs", []), opts.min_speedup)


def settle(report: dict[str, Any], pairs: list[dict[str, Any]], min_speedup: float) -> dict[str, Any]:
    """``report`` with the final ``pairs`` (as :meth:`Pair.to_dict`), their speed-up per thread count and the
    verdict: ``faster`` when every thread count reaches ``min_speedup``, else ``slower``."""
    report["pairs"] = pairs
    report["speedup"] = {str(p["threads"]): p["speedup"] for p in pairs}
    ok = bool(pairs) and all(p["speedup"] >= min_speedup for p in pairs)
    report["verdict"] = "faster" if ok else "slower"
    return report


def speed_line(report: dict[str, Any]) -> str:
    """One line with the figures: int8 vs fp32 at each thread count."""
    parts = [
        f"{p['int8_ms']:.2f} vs {p['fp32_ms']:.2f} ms ({p['speedup']:.2f}x) at {p['threads']} thread(s)"
        for p in report.get("pairs", [])
    ]
    return "; ".join(parts)


def warn_if_slower(report: dict[str, Any]) -> None:
    """A :class:`SpeedWarning` with the figures when int8 is not fast enough."""
    if report.get("verdict") != "slower":
        return
    want = report.get("min_speedup", 1.0)
    goal = "faster than fp32" if want <= 1.0 else f"{want:g}x faster than fp32"
    warnings.warn(
        f"the int8 model is not {goal}: int8 {speed_line(report)} "
        f"({report['fp32']}, {', '.join(sorted(set(report['method'].values())))})",
        SpeedWarning,
        stacklevel=3,
    )


__all__ = [
    "FP32_REFERENCE", "Pair", "check_speed", "check_threads", "settle", "speed_line", "time_pair", "warn_if_slower",
]  # fmt: skip
