"""What a report shows, computed once from artifacts' manifests and the JSON of bench / eval / analyze.

The HTML and Markdown writers only lay out what this module derives, so both always agree. Nothing
here imports torch or an engine runtime: manifests are read from the files (``ptsq.manifest_file``).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ptsq
from ptsq.manifest_file import plain_loader, read_manifest, runtime_of


@dataclass
class Artifact:
    """One int8 artifact: where it is, how big, and its manifest."""

    path: str
    bytes: int
    manifest: dict[str, Any]

    @property
    def label(self) -> str:  # bench and eval label artifacts by file name
        return Path(self.path).name

    @property
    def engine(self) -> str:
        return str(self.manifest.get("engine", "?"))

    @property
    def runtime(self) -> str:
        return runtime_of(self.manifest)

    @property
    def counts(self) -> dict[str, int]:
        rows = self.manifest.get("precision") or []
        return {p: sum(1 for r in rows if r.get("precision") == p) for p in ("int8", "fp32")}

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Artifact:
        return cls(str(path), Path(path).stat().st_size, read_manifest(path))


@dataclass
class Figure:
    """One headline figure: a big value, what it is, and the evidence behind it (samples, settings)."""

    title: str
    value: str
    detail: str
    verdict: str | None = None  # "good" | "poor" | None (no verdict)


@dataclass
class Report:
    artifacts: list[Artifact] = field(default_factory=list)
    bench: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None
    analyze: dict[str, Any] | None = None
    quantize: dict[str, Any] | None = None  # ptsq quantize's own result (it knows the fp32 size)
    title: str | None = None
    generated: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))

    @property
    def heading(self) -> str:
        if self.title:
            return self.title
        spec = next((a.manifest.get("model", {}).get("spec") for a in self.artifacts if a.manifest.get("model")), None)
        name = spec or (self.analyze or {}).get("model") or (self.artifacts[0].label if self.artifacts else "model")
        return f"ptsq report: {short(str(name))}"


def build(
    artifacts: list[str | os.PathLike[str]] | None = None,
    *,
    bench: dict[str, Any] | None = None,
    eval: dict[str, Any] | None = None,
    analyze: dict[str, Any] | None = None,
    quantize: dict[str, Any] | None = None,
    title: str | None = None,
) -> Report:
    """A report from artifact paths and already-checked command outputs (see :mod:`ptsq.report.inputs`)."""
    return Report([Artifact.read(p) for p in artifacts or []], bench, eval, analyze, quantize, title)


# ----------------------------------------------------------------------------------------- formats
def fmt_bytes(n: int | float | None) -> str:
    if n is None:
        return "–"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def fmt(v: Any, spec: str = ".3f") -> str:
    if v is None or isinstance(v, str):
        return "–" if v is None else v
    if isinstance(v, bool):
        return "yes" if v else "no"
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def short(label: str) -> str:
    """A model label without its folders: 'path/to/models.py:Net' -> 'models.py:Net', 'a/b/x.pt' -> 'x.pt'."""
    head, sep, tail = label.rpartition(":")
    if sep and ("/" in head or os.sep in head):
        return f"{Path(head).name}:{tail}"
    return Path(label).name if ("/" in label or os.sep in label) else label


def _setting(row: dict[str, Any]) -> str:
    t = row["threads"]
    return f"{t} thread{'s' if t != 1 else ''}, batch {row['batch_size']}"


# ---------------------------------------------------------------------------------------- headline
def _bench_rows_of(report: Report, label: str) -> list[dict[str, Any]]:
    return [t for t in (report.bench or {}).get("timings", []) if t["label"] == label]


def _fp32_size(report: Report) -> tuple[int | None, str]:
    if report.quantize and report.quantize.get("fp32_bytes"):
        return int(report.quantize["fp32_bytes"]), "fp32 state_dict"
    for t in (report.bench or {}).get("timings", []):
        if t["kind"] == "fp32" and t.get("size_bytes"):
            return int(t["size_bytes"]), f"fp32 weights file ({short(t['label'])})"
    return None, ""


def _check_text(chk: dict[str, Any], mode: str) -> tuple[str, str]:
    """(value, detail) of a manifest's self-check."""
    if not chk or chk.get("sqnr_db") is None:
        return "not compared", "outputs vary in size (see notes)"
    where = "held-back" if chk.get("held_out") else "calibration"
    if mode == "dynamic" and chk.get("cosine_mean") is not None:
        value = f"cosine {chk['cosine_mean']:.4f}"
    else:
        value = f"{chk['sqnr_db']:.1f} dB SQNR"
    parts = [f"cosine {chk['cosine']:.4f}"] if chk.get("cosine") is not None and "cosine" not in value else []
    if chk.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {chk['top1_agreement']:.3f}")
    if "SQNR" not in value:
        parts.append(f"SQNR {chk['sqnr_db']:.1f} dB")
    parts.append(f"on {chk.get('samples', '?')} {where} samples")
    return value, ", ".join(parts)


def _speed_figure(report: Report, art: Artifact | None) -> Figure | None:
    """The artifact's first bench row (or the first int8 row), else --engine auto's own timing."""
    timings = (report.bench or {}).get("timings", [])
    rows = _bench_rows_of(report, art.label) if art else []
    row = rows[0] if rows else next((t for t in timings if t["kind"] != "fp32" and t.get("speedup")), None)
    if row is not None:
        base = next(t for t in timings if t["threads"] == row["threads"] and t["batch_size"] == row["batch_size"])
        return Figure(
            "speed-up", f"{row['speedup']:.2f}x",
            f"{short(row['label'])}: median {row['median_ms']:.2f} ms vs {base['median_ms']:.2f} ms for "
            f"{short(base['label'])}, {_setting(row)}, {row.get('runs', '?')} interleaved runs each",
            "good" if row["speedup"] >= 1 else "poor",
        )  # fmt: skip
    auto = (art.manifest.get("auto") or {}) if art else {}
    chosen = next((r for r in auto.get("engines", []) if r.get("chosen")), {})
    if chosen.get("speedup") is not None:
        return Figure(
            "speed-up", f"{chosen['speedup']:.2f}x",
            f"--engine auto's timing of {chosen['engine']}: {chosen['median_ms']:.2f} ms vs fp32 "
            f"{auto['fp32_median_ms']:.2f} ms, {auto['threads']} thread(s), batch 1",
            "good" if chosen["speedup"] >= 1 else "poor",
        )  # fmt: skip
    if art:
        return Figure("speed-up", "not measured", "run ptsq bench FP32_MODEL ARTIFACT --json > bench.json, "
                      "then ptsq report ARTIFACT --bench bench.json")  # fmt: skip
    return None


def _artifact_figures(report: Report, art: Artifact) -> list[Figure]:
    """Size, the self-check's verdict, an accuracy budget's verdict, and where the layers run."""
    fp32, what = _fp32_size(report)
    if fp32:
        size = Figure("size", f"{fp32 / art.bytes:.2f}x smaller",
                      f"{what} {fmt_bytes(fp32)} → int8 {fmt_bytes(art.bytes)} ({art.label})")  # fmt: skip
    else:
        size = Figure("size", fmt_bytes(art.bytes), f"int8 artifact {art.label} (fp32 size not given)")
    chk = art.manifest.get("check") or {}
    value, detail = _check_text(chk, str(art.manifest.get("mode")))
    figs = [size, Figure("fidelity (self-check)", value, detail, {True: "good", False: "poor"}.get(chk.get("passed")))]
    budget = art.manifest.get("budget")
    if isinstance(budget, dict) and "met" in budget:
        kept = budget.get("fp32_layers") or []
        figs.append(Figure("accuracy budget", "met" if budget["met"] else "NOT met",
                           f"{budget.get('budget')}; {len(kept)} layer(s) kept fp32 for it",
                           "good" if budget["met"] else "poor"))  # fmt: skip
    c = art.counts
    figs.append(Figure("layers", f"{c['int8']} int8 / {c['fp32']} fp32",
                       f"{art.engine} engine, {art.manifest.get('mode', 'static')} mode, {art.runtime}"))  # fmt: skip
    return figs


def _eval_figures(report: Report, art: Artifact | None) -> list[Figure]:
    """Accuracy and agreement from ptsq eval: the artifact (or the first candidate) against the reference."""
    ev = report.eval or {}
    models = ev.get("models", [])
    if len(models) < 2:
        return []
    ref = models[0]
    cand = next((m for m in models[1:] if art and m["label"] == art.label), models[1])
    n = ev.get("data", {}).get("images", "?")
    figs = []
    if ref.get("top1") is not None and cand.get("top1") is not None:
        drop = 100 * (cand["top1"] - ref["top1"])
        figs.append(Figure("top-1 accuracy", f"{ref['top1']:.3f} → {cand['top1']:.3f}",
                           f"{short(ref['label'])} vs {short(cand['label'])} on {n} labelled images "
                           f"({drop:+.1f} points)"))  # fmt: skip
    f = cand.get("fidelity") or {}
    if f.get("top1_agreement") is not None:
        figs.append(Figure("top-1 agreement with fp32", f"{f['top1_agreement']:.3f}",
                           f"{short(cand['label'])} vs {short(ref['label'])} on {n} images; SQNR "
                           f"{fmt(f.get('sqnr_db'), '.1f')} dB"))  # fmt: skip
    return figs


def headline(report: Report) -> list[Figure]:
    """The figures a person deciding whether to ship wants first, each with the evidence behind it."""
    art = report.artifacts[0] if report.artifacts else None
    speed = _speed_figure(report, art)
    figs = [speed] if speed else []
    if art:
        figs += _artifact_figures(report, art)
    figs += _eval_figures(report, art)
    an = report.analyze
    if an and not art:
        figs.append(Figure("all-int8 output SQNR", f"{fmt(an.get('baseline_sqnr_db'), '.1f')} dB",
                           f"on {an.get('samples')} held-back calibration samples (ptsq analyze)"))  # fmt: skip
        keep = an.get("keep_fp32") or []
        figs.append(Figure("layers to keep fp32", str(len(keep)), ", ".join(keep) or "none gains enough"))
    return figs


def comparison(report: Report) -> list[dict[str, str]]:
    """fp32 vs each artifact side by side: one row per artifact with its headline figures."""
    evals = {m["label"]: m for m in (report.eval or {}).get("models", [])}
    fp32, _ = _fp32_size(report)
    rows = []
    for a in report.artifacts:
        bench = _bench_rows_of(report, a.label)
        speed = "–"
        if bench:
            speed = f"{bench[0]['speedup']:.2f}x ({_setting(bench[0])})"
        elif a.manifest.get("auto"):
            chosen = next((r for r in a.manifest["auto"].get("engines", []) if r.get("chosen")), {})
            speed = f"{chosen['speedup']:.2f}x (auto's timing)" if chosen.get("speedup") else "–"
        chk = a.manifest.get("check") or {}
        ev = evals.get(a.label) or {}
        fid = ev.get("fidelity") or {}
        c = a.counts
        rows.append({
            "artifact": a.label, "engine": f"{a.engine} ({a.manifest.get('mode', 'static')})",
            "layers int8/fp32": f"{c['int8']}/{c['fp32']}",
            "size": fmt_bytes(a.bytes) + (f" ({fp32 / a.bytes:.2f}x smaller)" if fp32 else ""),
            "speed-up": speed,
            "self-check": (f"{fmt(chk.get('sqnr_db'), '.1f')} dB on {chk.get('samples', '?')} samples, "
                           + {True: "passed", False: "POOR"}.get(chk.get("passed"), "not judged")),
            "eval": (f"top-1 {fmt(ev.get('top1'))}, " if ev.get("top1") is not None else "")
            + (f"agreement {fmt(fid.get('top1_agreement'))}" if fid else "–"),
        })  # fmt: skip
    if all(r["speed-up"] == "–" for r in rows):  # not measured for any: no empty column
        for r in rows:
            del r["speed-up"]
    return rows


# ----------------------------------------------------------------------------------------- latency
def latency(report: Report) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    """(settings, model labels, {(label, setting): timing row}) from the bench JSON."""
    timings = (report.bench or {}).get("timings", [])
    settings = list(dict.fromkeys(_setting(t) for t in timings))
    labels = list(dict.fromkeys(t["label"] for t in timings))
    return settings, labels, {(t["label"], _setting(t)): t for t in timings}


# ---------------------------------------------------------------------------------------- fidelity
def fidelity_rows(report: Report) -> list[dict[str, str]]:
    """One row per comparison with fp32: each artifact's self-check, then each eval candidate."""
    rows = []
    for a in report.artifacts:
        c = a.manifest.get("check") or {}
        passed = c.get("passed")
        rows.append({
            "model": a.label, "measured by": "self-check (quantize)",
            "samples": f"{c.get('samples', '?')} {'held-back' if c.get('held_out') else 'calibration'}",
            "top-1": "–", "top-1 agreement": fmt(c.get("top1_agreement")), "SQNR dB": fmt(c.get("sqnr_db"), ".1f"),
            "cosine": fmt(c.get("cosine_mean", c.get("cosine")), ".4f"), "KL": fmt(c.get("kl"), ".2e"),
            "verdict": {True: "passed", False: "POOR", None: "–"}.get(passed, "–"),
        })  # fmt: skip
    ev = report.eval or {}
    n = ev.get("data", {}).get("images", "?")
    for m in ev.get("models", []):
        f = m.get("fidelity") or {}
        rows.append({
            "model": m["label"], "measured by": f"ptsq eval ({m['kind']})", "samples": f"{n} images",
            "top-1": fmt(m.get("top1")), "top-1 agreement": fmt(f.get("top1_agreement")) if f else "reference",
            "SQNR dB": fmt(f.get("sqnr_db"), ".1f") if f else "–", "cosine": fmt(f.get("cosine"), ".4f") if f else "–",
            "KL": fmt(f.get("kl"), ".2e") if f else "–", "verdict": "–",
        })  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------- precision
def precision_rows(a: Artifact) -> list[dict[str, str]]:
    return [
        {
            "layer": r.get("name", ""),
            "op": r.get("op", ""),
            "precision": r.get("precision", ""),
            "why": r.get("reason", ""),
        }
        for r in a.manifest.get("precision") or []
    ]


# ------------------------------------------------------------------------------------- sensitivity
SENSITIVITY_NOTE = (
    "gain dB = output SQNR with that layer alone kept fp32, minus the all-int8 output SQNR (the ranking). "
    "layer SQNR dB = that layer's int8 output against fp32 at the same point, every earlier layer's error "
    "included; a conv that feeds ReLU6/hardtanh/clamp already outputs only the activation's range in int8, so "
    "the values the activation removes count as error there: such layers read low (often 0-6 dB) without being "
    "bad. It shows where error builds up, not which layer to fix."
)


def sensitivity(report: Report, limit: int = 25) -> list[dict[str, Any]]:
    """The analyze ranking (most harmful first), at most ``limit`` layers."""
    an = report.analyze or {}
    keep = set(an.get("keep_fp32") or [])
    return [{**r, "keep": r["name"] in keep} for r in (an.get("layers") or [])[:limit]]


# ------------------------------------------------------------------------------- calibration / env
def calibration_rows(a: Artifact) -> list[tuple[str, str]]:
    m = a.manifest
    cal = m.get("calibration") or {}
    pre = m.get("preprocess") or {}
    inp = m.get("input") or {}
    rows = [("mode", str(m.get("mode", "static")))]
    if cal.get("source") is not None:
        rows.append(("calibration data", str(cal["source"])))
    if cal.get("samples"):
        held = m.get("check", {}).get("samples")
        rows.append(("calibrated on", f"{cal['samples']} samples in {cal.get('batches', '?')} batches"
                     + (f"; {held} more held back for the self-check" if held and m.get("check", {}).get("held_out")
                        else "")))  # fmt: skip
    for k, label in (("requested", "subset requested"), ("found", "images found"), ("skipped", "unreadable, skipped"),
                     ("seed", "seed"), ("check_source", "check data"), ("train_source", "training data")):  # fmt: skip
        if cal.get(k) is not None:
            rows.append((label, str(cal[k])))
    if pre:
        size = pre.get("size") or []
        rows.append(("input size", "x".join(map(str, size)) + f", centre crop {pre.get('crop_pct')}"))
        rows.append(("pixels", f"(x * {pre.get('scale'):.6g} - mean) / std, mean {pre.get('mean')}, std "
                     f"{pre.get('std')}, {pre.get('channels')}" + (f" (preset {pre['preset']})" if pre.get("preset")
                                                                    else "")))  # fmt: skip
    else:
        rows.append(("preprocessing", "not recorded (tensor inputs, or made from Python without preprocess=)"))
    for shape, dtype, name in zip(inp.get("shapes", []), inp.get("dtypes", []), inp.get("names") or [""] * 99):
        rows.append((f"input {name}".strip(), f"{shape} {dtype}"))
    return rows


def environment_rows(report: Report) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for a in report.artifacts:
        m = a.manifest
        versions = ", ".join(f"{k} {v}" for k, v in (m.get("details") or {}).items()
                             if k in ("openvino", "nncf", "onnxruntime", "onnx", "torchao"))  # fmt: skip
        rows.append((f"{a.label}", f"made with ptsq {m.get('ptsq_version')}, torch {m.get('torch_version')}"
                     + (f", {versions}" if versions else "") + f"; engine {a.engine}, backend {m.get('backend')}; "
                     f"runs on {a.runtime}; "
                     + ("opens with ptsq.load only (fp32 islands)" if m.get("fp32_islands")
                        else f"opens without ptsq with {plain_loader(m)}")))  # fmt: skip
    mach = (report.bench or {}).get("machine")
    if mach:
        rows.append(("benchmark machine", f"{mach.get('cpu')} ({mach.get('cores')} cores; "
                     f"{', '.join(mach.get('isa') or []) or 'no SIMD flags read'}), {mach.get('machine', '')}, "
                     f"Python {mach.get('python')}, torch {mach.get('torch')}, quantized engine "
                     f"{mach.get('quantized_engine')}"))  # fmt: skip
    if report.eval:
        d = report.eval["data"]
        rows.append(("evaluation data", f"{d.get('images')} images from {d.get('source')} (labels: {d.get('labels')}"
                     + (f", {d['classes']} classes" if d.get("classes") else "") + ")"))  # fmt: skip
    rows.append(("report", f"written {report.generated} by ptsq {ptsq.__version__} on Python "
                 f"{platform.python_version()}"))  # fmt: skip
    return rows


def notes(report: Report) -> list[str]:
    out = []
    for a in report.artifacts:
        out += [f"{a.label}: {n}" for n in a.manifest.get("notes") or []]
    for w in [*(report.bench or {}).get("warnings", []), *(report.eval or {}).get("warnings", [])]:
        out.append(f"warning: {w}")
    return out


__all__ = [
    "SENSITIVITY_NOTE", "Artifact", "Figure", "Report", "build", "calibration_rows", "comparison",
    "environment_rows", "fidelity_rows", "fmt", "fmt_bytes", "headline", "latency", "notes", "precision_rows",
    "sensitivity", "short",
]  # fmt: skip
