"""``engine="auto"``: quantize with every engine, keep the fastest one whose int8 output is faithful.

The caller hands over ``run(name)``, which quantizes the model with one engine (so this module imports
neither the modes nor the API), and the list of engines to try. Every engine sees the same data, so
every self-check runs on the same held-back batches. An engine passes when its self-check passes and its
SQNR is within ``AutoOptions.margin_db`` of the best engine's; a self-check without a verdict (too few
held-back samples) does not rule an engine out. The passing ones are saved, loaded back
as users will load them (TorchScript, inductor-compiled program, onnxruntime session) and timed
interleaved with the fp32 model at batch 1; the fastest is returned, with the comparison table in
``summary()["auto"]`` and in the manifest.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptsq.config import QuantConfig
from ptsq.engines import available_engines, can_quantize
from ptsq.errors import PtsqError, QuantizationError
from ptsq.quantized import QuantizedModel

Run = Callable[[str], QuantizedModel]


@dataclass(frozen=True)
class Criterion:
    """What a mode compares engines on, and what to say when none passes."""

    metric: str  # the check key shown in the table (top1_agreement, cosine_mean)
    none_passed: tuple[str, str]


STATIC = Criterion(
    "top1_agreement",
    ("no engine's int8 model passed the fidelity check against fp32",
     "check the calibration data, or keep sensitive layers fp32 with --skip"),
)  # fmt: skip
DYNAMIC = Criterion(
    "cosine_mean",
    ("no engine's dynamic int8 model reached the cosine budget against fp32",
     "lower --min-cosine, or keep sensitive layers fp32 with --skip"),
)  # fmt: skip


def engines_to_try(config: QuantConfig, supported: tuple[str, ...] | None = None) -> list[str]:
    """``config.auto.engines``, or every installed engine (restricted to ``supported`` when given)."""
    names = list(config.auto.engines) or [e for e in available_engines() if can_quantize(e)]
    return [n for n in names if supported is None or n in supported]


def choose(
    names: list[str],
    run: Run,
    *,
    fp32: nn.Module,
    example: tuple[Any, ...],
    config: QuantConfig,
    criterion: Criterion,
    progress: bool,
    say: Callable[[str], None] | None = None,
) -> QuantizedModel:
    """Quantize with each engine in ``names`` through ``run``; return the fastest faithful result."""
    rows, done, passing = _compare(names, run, criterion, config.auto.margin_db, say or (lambda _m: None))
    return _fastest(fp32, done, rows, passing, example, config, progress)


def _compare(
    names: list[str], run: Run, criterion: Criterion, margin: float, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], dict[str, QuantizedModel], list[str]]:
    """Quantize with each engine; a row per engine, passing only if within ``margin`` dB of the best."""
    rows: list[dict[str, Any]] = []
    done: dict[str, QuantizedModel] = {}
    for i, name in enumerate(names):
        say(f"engine {i + 1}/{len(names)}: {name}")
        row: dict[str, Any] = {"engine": name}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a poor engine is reported in the table, not warned about
                qm = run(name)
        except PtsqError as exc:
            rows.append({**row, "status": "failed", "why": exc.message})
            continue
        chk = qm.manifest["check"]
        counts = qm.summary()["layers"]
        row.update(
            sqnr_db=round(chk["sqnr_db"], 2),
            int8_layers=counts["int8"],
            fp32_layers=counts["fp32"],
            status={True: "passed", False: "poor"}.get(chk.get("passed"), "no verdict"),
            **{criterion.metric: chk.get(criterion.metric)},
        )
        rows.append(row)
        done[name] = qm
    if not done:
        why = "; ".join(f"{r['engine']}: {r['why']}" for r in rows)
        raise QuantizationError(f"no engine could quantize the model ({why})", "run one engine with --engine NAME")
    best = max(r["sqnr_db"] for r in rows if "sqnr_db" in r)
    for r in rows:
        if r.get("status") in ("passed", "no verdict") and r["sqnr_db"] < best - margin:
            r["status"] = "poor"
            r["why"] = f"SQNR more than {margin:g} dB below the best engine's"
    passing = [r["engine"] for r in rows if r.get("status") in ("passed", "no verdict")]
    if not passing:
        raise QuantizationError(*criterion.none_passed)
    return rows, done, passing


def _fastest(
    model: nn.Module,
    done: dict[str, QuantizedModel],
    rows: list[dict[str, Any]],
    passing: list[str],
    example: tuple[Any, ...],
    config: QuantConfig,
    progress: bool,
) -> QuantizedModel:
    """Save and reload the passing engines' models, time them interleaved with fp32, return the fastest."""
    from ptsq.bench import Candidate, benchmark
    from ptsq.quantized import load

    threads = config.auto.threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="ptsq-auto-") as d:
        cands = [Candidate("fp32", model, kind="fp32")]
        for name in passing:
            path = done[name].save(Path(d) / f"model.{name}")
            cands.append(Candidate(name, load(path), path.stat().st_size, kind=f"int8 ({name})"))
        res = benchmark(
            cands, lambda bs: example, threads=[threads], batch_sizes=[1], warmup=5, runs=config.auto.runs,
            progress=progress,
        )  # fmt: skip
    timing = {t.label: t for t in res.timings}
    for r in rows:
        t = timing.get(r["engine"])
        if t is not None:
            r.update(median_ms=t.median_ms, speedup=t.speedup, bytes=t.size_bytes)
    chosen = min(passing, key=lambda n: timing[n].median_ms)
    for r in rows:
        r["chosen"] = r["engine"] == chosen
    table = {
        "chosen": chosen,
        "threads": threads,
        "batch_size": 1,
        "fp32_median_ms": timing["fp32"].median_ms,
        "margin_db": config.auto.margin_db,
        "engines": rows,
    }
    qm = done[chosen]
    qm.path = None  # the temporary copy is gone; the caller saves where it wants
    qm.stats.pop("int8_bytes", None)
    qm.manifest["auto"] = table
    qm.stats["auto"] = table
    return qm


__all__ = ["DYNAMIC", "STATIC", "Criterion", "choose", "engines_to_try"]
