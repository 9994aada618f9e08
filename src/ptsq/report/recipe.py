"""The commands that reproduce every figure of a report: quantize from the manifest's recipe, then bench,
eval, analyze and the report itself."""

from __future__ import annotations

import json
import shlex
from typing import Any

from ptsq.report.model import Artifact, Report


def _q(v: Any) -> str:
    return shlex.quote(str(v))


def recipe_file(a: Artifact) -> str:
    """The name the recipe of ``a`` is saved under in the reproduce commands."""
    return f"{a.label.rsplit('.', 1)[0]}.recipe.yaml"


def quantize_command(a: Artifact) -> str | None:
    """The ``ptsq quantize`` command that rebuilds ``a`` from its recipe file (see :func:`recipe_text`).

    The recipe holds engine, mode, calibration subset, seed and every engine option; the command adds what
    it does not: the model, its weights, the data and the preprocessing (exact values from the manifest).
    """
    m = a.manifest
    spec = (m.get("model") or {}).get("spec")
    if not spec:
        return None
    cal, pre = m.get("calibration") or {}, m.get("preprocess") or {}
    mode = m.get("mode", "static")
    parts = ["ptsq quantize", _q(spec)]
    if (m.get("model") or {}).get("weights_sha256"):
        parts.append("--weights WEIGHTS.pth")
    src = cal.get("source") if mode == "static" else cal.get("check_source")
    if src:
        parts += ["--calib", _q(src)]
    if mode == "qat" and cal.get("train_source"):
        parts += ["--train-data", _q(cal["train_source"])]
    if pre:
        size = pre.get("size") or []
        parts += ["--input-size", "x".join(map(str, size)), "--scale", f"{pre.get('scale'):.10g}",
                  "--mean", ",".join(f"{v:g}" for v in pre.get("mean", [])),
                  "--std", ",".join(f"{v:g}" for v in pre.get("std", [])),
                  "--channels", str(pre.get("channels")), "--crop-pct", f"{pre.get('crop_pct'):g}"]  # fmt: skip
    parts += ["--config", _q(recipe_file(a)), "-o", _q(a.label)]
    return " ".join(parts)


def recipe_text(a: Artifact) -> str:
    """The QuantConfig recorded in the manifest as a recipe file (what ``ptsq info ARTIFACT --recipe`` prints)."""
    from ptsq.config import QuantConfig
    from ptsq.errors import PtsqError

    raw = a.manifest.get("config") or {}
    try:
        return QuantConfig.from_dict(raw).to_yaml()  # older manifests' configs are read and upgraded
    except (PtsqError, TypeError, ValueError):  # e.g. an engine this ptsq does not know: show it as recorded
        return json.dumps(raw, indent=1, sort_keys=True)


def commands(report: Report) -> list[tuple[str, str]]:
    """(what, command) pairs: every command whose output this report shows."""
    out: list[tuple[str, str]] = []
    for a in report.artifacts:
        cmd = quantize_command(a)
        if cmd:
            cmd = f"ptsq info {_q(a.label)} --recipe > {_q(recipe_file(a))}\n{cmd}"
            note = ""
            if a.manifest.get("auto"):
                note = f" (--engine auto chose {a.engine}; use --engine auto to compare again)"
            out.append((f"rebuild {a.label}{note}", cmd))
        else:
            out.append((f"rebuild {a.label}", "# made from Python (ptsq.quantize): the config below is its recipe"))
    timings = (report.bench or {}).get("timings", [])
    if timings:
        labels = list(dict.fromkeys(t["label"] for t in timings))
        threads = ",".join(str(t) for t in dict.fromkeys(t["threads"] for t in timings))
        batches = ",".join(str(b) for b in dict.fromkeys(t["batch_size"] for t in timings))
        runs = timings[0].get("runs", 50)
        weights = " --weights WEIGHTS.pth" if any(t["kind"] == "fp32" for t in timings) else ""
        out.append(("latency", f"ptsq bench {' '.join(_q(x) for x in labels)}{weights} --threads {threads} "
                    f"--batch-size {batches} --runs {runs} --json > bench.json"))  # fmt: skip
    if report.eval:
        d = report.eval["data"]
        labels = [m["label"] for m in report.eval["models"]]
        lab = {"pattern": " --label-pattern PATTERN", "none": " --labels none"}.get(d.get("labels"), "")
        out.append(("accuracy and fidelity", f"ptsq eval {' '.join(_q(x) for x in labels)} --data {_q(d['source'])}"
                    f"{lab} --json > eval.json"))  # fmt: skip
    if report.analyze:
        an = report.analyze
        opts = f" {an['options']}" if an.get("options") else ""
        out.append(("sensitivity", f"ptsq analyze {_q(an.get('model', 'MODEL'))} --calib {_q(an.get('calib', 'DIR'))}"
                    f"{opts} --json > analyze.json"))  # fmt: skip
        if an.get("command"):
            out.append(("the fix analyze recommends", an["command"]))
    inputs = " ".join(_q(a.label) for a in report.artifacts)
    extra = "".join(f" --{k} {k}.json" for k, v in (("bench", report.bench), ("eval", report.eval),
                                                    ("analyze", report.analyze)) if v)  # fmt: skip
    out.append(("this report", f"ptsq report {inputs}{extra} -o report.html".replace("  ", " ")))
    return out


__all__ = ["commands", "quantize_command", "recipe_file", "recipe_text"]
