"""``engine="auto"``: quantize with every engine, keep the fastest one whose int8 output is faithful.

Every registered engine quantizes the model on the same calibration batches (so every self-check
runs on the same held-back batches). An engine passes when its self-check passes and its SQNR is
within ``AUTO_MARGIN_DB`` of the best engine's. The passing ones are saved, loaded back as users
will load them (TorchScript, inductor-compiled program, onnxruntime session) and timed interleaved
with the fp32 model at batch 1 on this machine's current thread count; the fastest is returned,
with the comparison table in ``summary()["auto"]`` and in the manifest.
"""

from __future__ import annotations

import dataclasses
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptsq.calibration import as_args, first_sample
from ptsq.config import QuantConfig
from ptsq.data.preprocess import Preprocess
from ptsq.engines import available_engines, missing_packages
from ptsq.errors import DataError, PtsqError, QuantizationError
from ptsq.quantized import QuantizedModel

AUTO_MARGIN_DB = 1.0
AUTO_RUNS = 20


def engines_to_try(config: QuantConfig) -> list[str]:
    names = config.extra.get("auto_engines") or [
        e for e in available_engines() if e != "auto" and not missing_packages(e)
    ]
    return [str(n) for n in names]


def quantize_auto(
    model: nn.Module,
    calibration: Iterable[Any],
    *,
    example_inputs: tuple[Any, ...] | None,
    backend: str,
    config: QuantConfig,
    progress: bool,
    transform: Callable[[Any], Any] | None,
    preprocess: Preprocess | None,
    source: dict[str, Any] | None,
) -> QuantizedModel:
    from ptsq.api import quantize

    if isinstance(calibration, (torch.Tensor, str, bytes)):
        raise DataError(
            f"calibration data must be an iterable of batches, not a single {type(calibration).__name__}",
            "pass a list of tensors, a DataLoader, or ptsq.data.CalibrationImages(folder, preprocess)",
        )
    batches = [as_args(transform(b) if transform else b) for b in calibration]  # every engine sees the same
    if not batches:
        raise DataError("the calibration data is empty", "give at least one batch of inputs")
    margin = float(config.extra.get("auto_margin_db", AUTO_MARGIN_DB))

    def run(name: str) -> QuantizedModel:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a poor engine is reported in the table, not warned about
            return quantize(
                model, batches, example_inputs=example_inputs, backend=backend,
                config=dataclasses.replace(config, engine=name), progress=progress, preprocess=preprocess,
                source=source,
            )  # fmt: skip

    rows, done, passing = _compare(
        engines_to_try(config), run, "top1_agreement", margin,
        ("no engine's int8 model passed the fidelity check against fp32",
         "check the calibration data, or keep sensitive layers fp32 with --skip"),
    )  # fmt: skip

    example = first_sample(batches[0]) if example_inputs is None else tuple(example_inputs)
    return _fastest(model, done, rows, passing, example, config, progress, margin)


def _compare(
    names: list[str], run: Callable[[str], QuantizedModel], metric: str, margin: float, none_passed: tuple[str, str]
) -> tuple[list[dict[str, Any]], dict[str, QuantizedModel], list[str]]:
    """Quantize with each engine; a row per engine, passing only if within ``margin`` dB of the best."""
    rows: list[dict[str, Any]] = []
    done: dict[str, QuantizedModel] = {}
    for name in names:
        row: dict[str, Any] = {"engine": name}
        try:
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
            status="passed" if chk.get("passed") else "poor",
            **{metric: chk.get(metric)},
        )
        rows.append(row)
        done[name] = qm
    if not done:
        why = "; ".join(f"{r['engine']}: {r['why']}" for r in rows)
        raise QuantizationError(f"no engine could quantize the model ({why})", "run one engine with --engine NAME")
    best = max(r["sqnr_db"] for r in rows if "sqnr_db" in r)
    for r in rows:
        if r.get("status") == "passed" and r["sqnr_db"] < best - margin:
            r["status"] = "poor"
            r["why"] = f"SQNR more than {margin:g} dB below the best engine's"
    passing = [r["engine"] for r in rows if r.get("status") == "passed"]
    if not passing:
        raise QuantizationError(*none_passed)
    return rows, done, passing


def _fastest(
    model: nn.Module,
    done: dict[str, QuantizedModel],
    rows: list[dict[str, Any]],
    passing: list[str],
    example: tuple[Any, ...],
    config: QuantConfig,
    progress: bool,
    margin: float,
) -> QuantizedModel:
    """Save and reload the passing engines' models, time them interleaved with fp32, return the fastest."""
    from ptsq.bench import Candidate, benchmark
    from ptsq.quantized import load

    threads = int(config.extra.get("auto_threads") or torch.get_num_threads())
    with tempfile.TemporaryDirectory(prefix="ptsq-auto-") as d:
        cands = [Candidate("fp32", model, kind="fp32")]
        for name in passing:
            path = done[name].save(Path(d) / f"model.{name}")
            cands.append(Candidate(name, load(path), path.stat().st_size, kind=f"int8 ({name})"))
        res = benchmark(
            cands, lambda bs: example, threads=[threads], batch_sizes=[1], warmup=5,
            runs=int(config.extra.get("auto_runs", AUTO_RUNS)), progress=progress,
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
        "margin_db": margin,
        "engines": rows,
    }
    qm = done[chosen]
    qm.path = None  # the temporary copy is gone; the caller saves where it wants
    qm.stats.pop("int8_bytes", None)
    qm.manifest["auto"] = table
    qm.stats["auto"] = table
    return qm


def quantize_dynamic_auto(
    model: nn.Module,
    *,
    example_inputs: tuple[Any, ...],
    backend: str,
    config: QuantConfig,
    check_inputs: Sequence[Any] | None,
    min_cosine: float | None,
    full_range: bool,
    source: dict[str, Any] | None,
) -> QuantizedModel:
    """Dynamic mode on every engine that has it (fx, onnx), same check inputs; the fastest faithful one wins.

    An engine passes when its mean cosine meets ``min_cosine`` and its SQNR is within the margin of
    the best engine's, as in static mode.
    """
    from ptsq.modes.dynamic import DYNAMIC_ENGINES, quantize_dynamic

    names = [n for n in engines_to_try(config) if n in DYNAMIC_ENGINES]
    margin = float(config.extra.get("auto_margin_db", AUTO_MARGIN_DB))

    def run(name: str) -> QuantizedModel:
        return quantize_dynamic(
            model, example_inputs=example_inputs, backend=backend, config=dataclasses.replace(config, engine=name),
            check_inputs=check_inputs, min_cosine=min_cosine, full_range=full_range, source=source,
        )  # fmt: skip

    rows, done, passing = _compare(
        names, run, "cosine_mean", margin,
        ("no engine's dynamic int8 model reached the cosine budget against fp32",
         "lower --min-cosine, or keep sensitive layers fp32 with --skip"),
    )  # fmt: skip
    example = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    return _fastest(model, done, rows, passing, example, config, progress=False, margin=margin)
